"""covering indexes for the console's grouped counts at scale

bench-console at 100,000 engagements and 200,000 messages (PostgreSQL, load 2.5): the
playbooks list, a playbook's page, the pool and the overview spent 40-65 ms per grouped
count reading heap rows for columns no index held (the playbooks list runs one per
playbook; the pool three). Each index below holds every column its counts read, so
PostgreSQL answers them with an index-only scan:

- messages per playbook by state and skip reason, and per step (the playbook report and
  funnel): ``ix_messages_playbook`` (playbook_id, state) becomes (playbook_id, state,
  skip_reason, step_id), which still answers everything the old one did;
- messages since a day by channel, state and skip reason (the overview): the list's
  ``ix_messages_created`` (created_at, id) gains channel, state and skip_reason after its
  order columns;
- engagements by status and outcome (the pool's tables): ``ix_engagements_status_outcome``;
- engagements opened since a day, per playbook and their days open (the pool's forecast):
  ``ix_engagements_opened_counts`` (opened_at, status, playbook_id, closed_at, due_at).
  Not 0024's list index widened: with the 36-character id in it that index was 13 times
  the size (1,277 pages against 96) and PostgreSQL preferred a sequential scan (86 ms)
  to an index-only scan of it (18 ms).

Revision ID: 0025_console_counts_covered
Revises: 0024_engagements_opened
Create Date: 2026-12-07 03:40:00
"""
from __future__ import annotations

from alembic import op

revision = '0025_console_counts_covered'
down_revision = '0024_engagements_opened'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute('DROP INDEX ix_messages_playbook')
    op.execute('CREATE INDEX ix_messages_playbook ON messages (playbook_id, state, skip_reason, step_id)')
    op.execute('DROP INDEX ix_messages_created')
    op.execute('CREATE INDEX ix_messages_created ON messages (created_at, id, channel, state, skip_reason)')
    op.execute('CREATE INDEX ix_engagements_status_outcome ON engagements (status, outcome)')
    op.execute('CREATE INDEX ix_engagements_opened_counts ON engagements (opened_at, status, playbook_id, closed_at, due_at)')


def downgrade() -> None:
    op.execute('DROP INDEX ix_engagements_opened_counts')
    op.execute('DROP INDEX ix_engagements_status_outcome')
    op.execute('DROP INDEX ix_messages_created')
    op.execute('CREATE INDEX ix_messages_created ON messages (created_at, id)')
    op.execute('DROP INDEX ix_messages_playbook')
    op.execute('CREATE INDEX ix_messages_playbook ON messages (playbook_id, state)')
