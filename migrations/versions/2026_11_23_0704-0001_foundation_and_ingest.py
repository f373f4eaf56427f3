"""foundation and ingest

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 07:04:19.595019
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import shared.db
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('account_event_seen',
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.Column('event_name', sa.String(length=128), nullable=False),
    sa.Column('first_seen_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('account_id', 'event_name', name=op.f('pk_account_event_seen'))
    )
    op.create_table('accounts',
    sa.Column('id', sa.String(length=128), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('plan', sa.String(length=64), nullable=True),
    sa.Column('arr', sa.Float(), nullable=True),
    sa.Column('seats', sa.Integer(), nullable=True),
    sa.Column('segment', sa.String(length=64), nullable=True),
    sa.Column('lifecycle_stage', sa.String(length=64), nullable=True),
    sa.Column('lifecycle_stage_changed_at', shared.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('renewal_date', sa.Date(), nullable=True),
    sa.Column('signup_date', sa.Date(), nullable=True),
    sa.Column('owner_email', sa.String(length=254), nullable=True),
    sa.Column('traits', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('traits_at', shared.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('first_seen_at', shared.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_seen_at', shared.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_accounts'))
    )
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.create_index('ix_accounts_lifecycle_stage', ['lifecycle_stage'], unique=False)
        batch_op.create_index('ix_accounts_plan', ['plan'], unique=False)
        batch_op.create_index('ix_accounts_segment', ['segment'], unique=False)

    op.create_table('api_keys',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('csm_id', sa.String(length=128), nullable=True),
    sa.Column('created_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', shared.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('prefix', name=op.f('uq_api_keys_prefix'))
    )
    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('object_type', sa.String(length=32), nullable=False),
    sa.Column('object_id', sa.String(length=128), nullable=False),
    sa.Column('version', sa.Integer(), nullable=True),
    sa.Column('details', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_audit_log_object', ['object_type', 'object_id'], unique=False)

    op.create_table('events',
    sa.Column('event_id', sa.String(length=128), nullable=False),
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.Column('user_id', sa.String(length=128), nullable=True),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('timestamp', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('properties', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('received_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_events'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_account_ts', ['account_id', 'timestamp'], unique=False)
        batch_op.create_index('ix_events_received_at', ['received_at'], unique=False, postgresql_using='brin')

    op.create_table('usage_daily',
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('event_name', sa.String(length=128), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('account_id', 'day', 'event_name', name=op.f('pk_usage_daily'))
    )
    with op.batch_alter_table('usage_daily', schema=None) as batch_op:
        batch_op.create_index('ix_usage_daily_day', ['day'], unique=False)

    op.create_table('user_activity_daily',
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('user_id', sa.String(length=128), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('account_id', 'day', 'user_id', name=op.f('pk_user_activity_daily'))
    )
    with op.batch_alter_table('user_activity_daily', schema=None) as batch_op:
        batch_op.create_index('ix_user_activity_daily_day', ['day'], unique=False)

    op.create_table('user_event_seen',
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.Column('user_id', sa.String(length=128), nullable=False),
    sa.Column('event_name', sa.String(length=128), nullable=False),
    sa.Column('first_seen_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('account_id', 'user_id', 'event_name', name=op.f('pk_user_event_seen'))
    )
    op.create_table('users',
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.Column('id', sa.String(length=128), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('role', sa.String(length=32), nullable=True),
    sa.Column('timezone', sa.String(length=64), nullable=True),
    sa.Column('traits', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('traits_at', shared.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('first_seen_at', shared.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_seen_at', shared.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_users_account_id_accounts')),
    sa.PrimaryKeyConstraint('account_id', 'id', name=op.f('pk_users'))
    )
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.create_index('ix_users_email', ['email'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_index('ix_users_email')

    op.drop_table('users')
    op.drop_table('user_event_seen')
    with op.batch_alter_table('user_activity_daily', schema=None) as batch_op:
        batch_op.drop_index('ix_user_activity_daily_day')

    op.drop_table('user_activity_daily')
    with op.batch_alter_table('usage_daily', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_daily_day')

    op.drop_table('usage_daily')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_received_at')
        batch_op.drop_index('ix_events_account_ts')

    op.drop_table('events')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_log_object')

    op.drop_table('audit_log')
    op.drop_table('api_keys')
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_index('ix_accounts_segment')
        batch_op.drop_index('ix_accounts_plan')
        batch_op.drop_index('ix_accounts_lifecycle_stage')

    op.drop_table('accounts')
    op.drop_table('account_event_seen')
