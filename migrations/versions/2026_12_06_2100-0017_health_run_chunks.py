"""health runs in chunks: health_runs.cursor and finished_at

The daily health scoring no longer scores every account in one go inside the rules
worker's poll loop (at 100,000 accounts event-triggered rules waited for all of it): it
scores a chunk of accounts per poll, in id order. ``cursor`` is the last account stored,
``finished_at`` is set when the day is done. Days scored before are finished.

Revision ID: 0017_health_run_chunks
Revises: 0016_contract_outcomes
Create Date: 2026-12-06 21:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import shared.db

revision = '0017_health_run_chunks'
down_revision = '0016_contract_outcomes'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('health_runs') as batch:
        batch.add_column(sa.Column('cursor', sa.String(length=128), nullable=True))
        batch.add_column(sa.Column('finished_at', shared.db.UTCDateTime(timezone=True), nullable=True))
    op.execute("UPDATE health_runs SET finished_at = started_at")


def downgrade() -> None:
    with op.batch_alter_table('health_runs') as batch:
        batch.drop_column('finished_at')
        batch.drop_column('cursor')
