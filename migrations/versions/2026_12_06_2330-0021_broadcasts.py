"""broadcasts: one-off or scheduled sends to a named segment

A broadcast sends a customer template to the members of a named segment, now or at a
set time, through the contact gate, quiet hours and a holdout (issue 22, item 6;
docs/broadcasts.md). ``broadcasts`` holds each one and its progress (the last account
sent, chunk by chunk); its messages carry its id in ``messages.broadcast_id`` (a new
nullable column: no rewrite of the table), indexed with the state for its report.

Revision ID: 0021_broadcasts
Revises: 0020_console_search
Create Date: 2026-12-06 23:30:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import shared.db

revision = '0021_broadcasts'
down_revision = '0020_console_search'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    op.create_table(
        'broadcasts',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('template_id', sa.String(length=128), nullable=False),
        sa.Column('segment_id', sa.String(length=64), nullable=False),
        sa.Column('channel', sa.String(length=16), nullable=False),
        sa.Column('to', JSON, nullable=False),
        sa.Column('holdout_percent', sa.Float(), nullable=False),
        sa.Column('send_at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('cursor', sa.String(length=128), nullable=True),
        sa.Column('accounts_done', sa.Integer(), nullable=False),
        sa.Column('chunks_done', sa.Integer(), nullable=False),
        sa.Column('created_by', sa.String(length=200), nullable=False),
        sa.Column('created_at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('started_at', shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('finished_at', shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('cancelled_at', shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('cancelled_by', sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_broadcasts')),
    )
    op.create_index('ix_broadcasts_due', 'broadcasts', ['status', 'send_at'], unique=False)
    op.add_column('messages', sa.Column('broadcast_id', sa.String(length=36), nullable=True))
    op.create_index('ix_messages_broadcast', 'messages', ['broadcast_id', 'state'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_messages_broadcast', table_name='messages')
    with op.batch_alter_table('messages') as batch:
        batch.drop_column('broadcast_id')
    op.drop_index('ix_broadcasts_due', table_name='broadcasts')
    op.drop_table('broadcasts')
