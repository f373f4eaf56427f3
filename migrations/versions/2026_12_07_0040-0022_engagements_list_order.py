"""engagements list order: an expression index in the console list's default order

The console's engagements list (services/outreach/engagements/repository.py,
find_engagements) shows the open ones first by due date (the unscheduled last), then the
closed ones, ties by opened_at (newest first) and id, 50 a page. Without an index in that
order every page sorted the whole table: at 100,000 engagements page 100 took 0.35 s of
PostgreSQL (a top-N sort of 5,000 rows after a scan of all of them; bench-console). This
index holds the rows in exactly that order (the open statuses written as literals, as the
query writes them), so a page reads its offset plus 50 index entries: 14 ms.

Revision ID: 0022_engagements_list_order
Revises: 0021_broadcasts
Create Date: 2026-12-07 00:40:00
"""
from __future__ import annotations

from alembic import op

revision = '0022_engagements_list_order'
down_revision = '0021_broadcasts'
branch_labels = None
depends_on = None

# The same expressions as find_engagements' ORDER BY for its default order ("due").
ORDER = "(status NOT IN ('active', 'assigned', 'queued')), (due_at IS NULL), due_at, opened_at DESC, id"


def upgrade() -> None:
    op.execute(f'CREATE INDEX ix_engagements_list_order ON engagements ({ORDER})')


def downgrade() -> None:
    op.execute('DROP INDEX ix_engagements_list_order')
