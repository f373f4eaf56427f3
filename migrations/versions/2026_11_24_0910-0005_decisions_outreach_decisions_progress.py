"""outreach decisions, the signal orphan sweeper's schedule, consumer progress

Revision ID: 0005_decisions
Revises: 0004_jobs
Create Date: 2026-11-23 21:00:00

- ``outreach_decisions`` (outreach): what outreach did with each signal.
- ``signals.decision_due_at`` / ``signals.republished`` (rules): when the orphan
  sweeper checks a signal next. Signals stored before this migration get NULL (never
  swept): outreach received them before decisions existed.
- ``consumer_progress`` (shared): each consumer group's measured position and lag per
  partition, the freshness watermark of the rules tick and of ``touchline demo``.
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import shared.db
from sqlalchemy.dialects import postgresql

revision = '0005_decisions'
down_revision = '0004_jobs'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('outreach_decisions',
    sa.Column('signal_id', sa.String(length=128), nullable=False),
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.Column('rule_id', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('decision', sa.String(length=32), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=True),
    sa.Column('playbooks', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('decided_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('signal_id', name=op.f('pk_outreach_decisions'))
    )
    with op.batch_alter_table('outreach_decisions', schema=None) as batch_op:
        batch_op.create_index('ix_outreach_decisions_account', ['account_id', 'decided_at'], unique=False)

    op.create_table('consumer_progress',
    sa.Column('group_id', sa.String(length=255), nullable=False),
    sa.Column('topic', sa.String(length=255), nullable=False),
    sa.Column('partition', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('highwater', sa.Integer(), nullable=False),
    sa.Column('lag', sa.Integer(), nullable=False),
    sa.Column('updated_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('group_id', 'topic', 'partition', name=op.f('pk_consumer_progress'))
    )

    with op.batch_alter_table('signals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('decision_due_at', shared.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('republished', sa.Integer(), nullable=False, server_default='0'))
        batch_op.create_index('ix_signals_decision_due', ['decision_due_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('signals', schema=None) as batch_op:
        batch_op.drop_index('ix_signals_decision_due')
        batch_op.drop_column('republished')
        batch_op.drop_column('decision_due_at')
    op.drop_table('consumer_progress')
    with op.batch_alter_table('outreach_decisions', schema=None) as batch_op:
        batch_op.drop_index('ix_outreach_decisions_account')
    op.drop_table('outreach_decisions')
