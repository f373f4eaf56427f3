"""dead letters: every rejected record kept in the database beside its DLQ topic

The embedded broker keeps topics in memory only, so after a restart of `make run` the
DLQ topic was empty and `touchline dlq` said nothing had been rejected. The workers now
store each reject here (keyed by a fingerprint of source topic, partition, offset and
bytes, so a redelivered batch stores it once) before they publish it to the DLQ topic.

Revision ID: 0011_dead_letters
Revises: 0010_console_sessions
Create Date: 2026-12-06 15:30:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import shared.db

revision = '0011_dead_letters'
down_revision = '0010_console_sessions'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'dead_letters',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('fingerprint', sa.String(length=64), nullable=False),
        sa.Column('dlq_topic', sa.String(length=255), nullable=False),
        sa.Column('worker', sa.String(length=64), nullable=False),
        sa.Column('source_topic', sa.String(length=255), nullable=False),
        sa.Column('source_partition', sa.Integer(), nullable=False),
        sa.Column('source_offset', sa.BigInteger(), nullable=False),
        sa.Column('reason', sa.String(length=64), nullable=False),
        sa.Column('detail', sa.Text(), nullable=False),
        sa.Column('key', sa.LargeBinary(), nullable=True),
        sa.Column('value', sa.LargeBinary(), nullable=True),
        sa.Column('rejected_at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_dead_letters')),
        sa.UniqueConstraint('fingerprint', name=op.f('uq_dead_letters_fingerprint')),
    )
    op.create_index('ix_dead_letters_rejected_at', 'dead_letters', ['rejected_at'])


def downgrade() -> None:
    op.drop_index('ix_dead_letters_rejected_at', table_name='dead_letters')
    op.drop_table('dead_letters')
