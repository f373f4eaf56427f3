"""console sessions on the server; link keys that expire

Revision ID: 0010_console_sessions
Revises: 0009_template_audience
Create Date: 2026-12-06 15:10:00

- ``console_sessions`` (shared): one row per signed-in console session, keyed by the
  SHA-256 of the random id the cookie seals. Signing out sets ``ended_at``: every copy
  of the cookie stops working (issue 18, finding 6). Cookies issued before this
  migration name no row and sign in again.
- ``api_keys.expires_at`` (shared): keys minted for one-time console links end at this
  time (TOUCHLINE_CONSOLE_LINK_KEY_MINUTES). Existing keys get NULL (no expiry), link
  keys included: revoke old "console link …" keys with ``touchline keys revoke``.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import shared.db

revision = '0010_console_sessions'
down_revision = '0009_template_audience'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_keys') as batch:
        batch.add_column(sa.Column('expires_at', shared.db.UTCDateTime(timezone=True), nullable=True))
    op.create_table('console_sessions',
    sa.Column('id_hash', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.Integer(), nullable=False),
    sa.Column('created_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', shared.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('ended_at', shared.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['key_id'], ['api_keys.id'], name=op.f('fk_console_sessions_key_id_api_keys')),
    sa.PrimaryKeyConstraint('id_hash', name=op.f('pk_console_sessions'))
    )
    op.create_index('ix_console_sessions_expires_at', 'console_sessions', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_console_sessions_expires_at', table_name='console_sessions')
    op.drop_table('console_sessions')
    with op.batch_alter_table('api_keys') as batch:
        batch.drop_column('expires_at')
