"""messages: the sender's claim reads the due queue in its own order from an index

A claim takes the oldest due queued messages, ``ORDER BY next_attempt_at, id LIMIT n``
(services/outreach/delivery/repository.py, ``claim_due``). ``ix_messages_state_due``
(state, next_attempt_at) could not give that order (the id breaks ties), so PostgreSQL
read every due message's whole row, rendered bodies included, and sorted them all for
each claim: 67 ms for a claim of 500 out of 5,000 queued (an external merge of 7.5 MB on
disk), growing with the backlog, a third of the sender's time in `make bench-outreach`.
With the id in the index the claim is an index scan that stops at its limit (2 ms, the
same at any backlog). Everything the old index answered (the backlog's count and oldest
due) the new one answers too.

Revision ID: 0028_messages_claim_order
Revises: 0027_signals_sorted
Create Date: 2026-12-07 07:20:00
"""
from __future__ import annotations

from alembic import op

revision = '0028_messages_claim_order'
down_revision = '0027_signals_sorted'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute('DROP INDEX ix_messages_state_due')
    op.execute('CREATE INDEX ix_messages_state_due ON messages (state, next_attempt_at, id)')


def downgrade() -> None:
    op.execute('DROP INDEX ix_messages_state_due')
    op.execute('CREATE INDEX ix_messages_state_due ON messages (state, next_attempt_at)')
