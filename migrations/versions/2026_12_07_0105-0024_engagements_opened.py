"""engagements newest first: an index in the "by opened" order

The console's engagements list sorted by when opened (and GET /v1/engagements, whose
order is the same: opened_at DESC, then id) had no index beginning with opened_at (only
per account), so every page sorted all rows: 179 ms p50, 382 ms p95 at 100,000
engagements (bench-console, load 6-9). This index holds them in that order: 0.1 ms for
the first page in PostgreSQL (EXPLAIN ANALYZE on the same data).

Revision ID: 0024_engagements_opened
Revises: 0023_messages_newest
Create Date: 2026-12-07 01:05:00
"""
from __future__ import annotations

from alembic import op

revision = '0024_engagements_opened'
down_revision = '0023_messages_newest'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute('CREATE INDEX ix_engagements_opened ON engagements (opened_at DESC, id)')


def downgrade() -> None:
    op.execute('DROP INDEX ix_engagements_opened')
