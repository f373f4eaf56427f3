"""settle decided signals: the rules service no longer asks outreach at sweep time

Outreach now settles a signal (``signals.decision_due_at`` = NULL) in the transaction
that records its decision, and rules' orphan sweeper republishes every due signal
without asking outreach. Signals decided before this revision but not yet swept are
settled here, so that the sweeper does not republish them.

Revision ID: 0013_settle_decided_signals
Revises: 0012_message_audience
Create Date: 2026-12-06 17:00:00
"""
from __future__ import annotations

from alembic import op

revision = '0013_settle_decided_signals'
down_revision = '0012_message_audience'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "UPDATE signals SET decision_due_at = NULL "
        "WHERE decision_due_at IS NOT NULL AND signal_id IN (SELECT signal_id FROM outreach_decisions)"
    )


def downgrade() -> None:
    pass  # a settled signal stays settled: the old sweeper would have settled it too
