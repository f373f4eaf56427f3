"""messages newest first: an index in the message list's order

The console's messages list (and GET /v1/messages) shows messages newest first
(created_at DESC, id DESC), 100 a page, filtered or not, paged after the last row. No index
began with created_at (only per account, contact and playbook), so every page sorted the
whole table: at 200,000 messages 0.16 s of PostgreSQL for the first page (a parallel
seq scan and a top-N heapsort; bench-console). Read backwards, this index gives the
page in order: 0.08 ms unfiltered, 0.25 ms for a channel or a playbook (EXPLAIN ANALYZE).

Revision ID: 0023_messages_newest
Revises: 0022_engagements_list_order
Create Date: 2026-12-07 00:50:00
"""
from __future__ import annotations

from alembic import op

revision = '0023_messages_newest'
down_revision = '0022_engagements_list_order'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_messages_created', 'messages', ['created_at', 'id'])


def downgrade() -> None:
    op.drop_index('ix_messages_created', table_name='messages')
