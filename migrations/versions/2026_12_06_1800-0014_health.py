"""health: the health model's versions, one score per account per day, the daily run's claim

Customer health (issue 21, docs/health.md): CS Ops define one model in the rule
language (every change a new version, audited); the rules worker scores every account
once per UTC day behind the tick's freshness watermark, and on demand, keeping one row
per account per day (retention TOUCHLINE_HEALTH_SCORE_RETENTION_DAYS).

Revision ID: 0014_health
Revises: 0013_settle_decided_signals
Create Date: 2026-12-06 18:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import shared.db

revision = '0014_health'
down_revision = '0013_settle_decided_signals'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    op.create_table(
        'health_model_versions',
        sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('definition', JSON, nullable=False),
        sa.Column('created_at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('created_by', sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint('version', name=op.f('pk_health_model_versions')),
    )
    op.create_table(
        'health_scores',
        sa.Column('account_id', sa.String(length=128), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('score', sa.Float(), nullable=True),
        sa.Column('label', sa.String(length=16), nullable=True),
        sa.Column('model_version', sa.Integer(), nullable=False),
        sa.Column('components', JSON, nullable=False),
        sa.Column('change_7d', sa.Float(), nullable=True),
        sa.Column('change_30d', sa.Float(), nullable=True),
        sa.Column('scored_at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('account_id', 'day', name=op.f('pk_health_scores')),
    )
    op.create_index('ix_health_scores_day_score', 'health_scores', ['day', 'score'])
    op.create_table(
        'health_runs',
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('started_at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('model_version', sa.Integer(), nullable=False),
        sa.Column('result', JSON, nullable=False),
        sa.PrimaryKeyConstraint('day', name=op.f('pk_health_runs')),
    )


def downgrade() -> None:
    op.drop_table('health_runs')
    op.drop_index('ix_health_scores_day_score', table_name='health_scores')
    op.drop_table('health_scores')
    op.drop_table('health_model_versions')
