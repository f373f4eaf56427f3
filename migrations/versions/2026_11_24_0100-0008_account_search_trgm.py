"""account search: trigram indexes on accounts.id and accounts.name (PostgreSQL)

The console's and the API's account search is a case-insensitive substring match
(``id ILIKE '%q%' OR name ILIKE '%q%'``, plus the total count). A B-tree cannot serve a
leading wildcard, so on PostgreSQL both columns get a GIN index with ``gin_trgm_ops``
from the ``pg_trgm`` extension (shipped with PostgreSQL's contrib modules and trusted
since PostgreSQL 13: the database owner may create it, no superuser needed). SQLite has
no trigram index; there the search scans, which a development database's size allows.

Revision ID: 0008_account_search_trgm
Revises: 0005_decisions
Create Date: 2026-11-24 01:00:00
"""
from __future__ import annotations

from alembic import op

revision = '0008_account_search_trgm'
down_revision = '0005_decisions'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.execute('CREATE EXTENSION IF NOT EXISTS pg_trgm')
    op.create_index('ix_accounts_id_trgm', 'accounts', ['id'], postgresql_using='gin',
                    postgresql_ops={'id': 'gin_trgm_ops'})
    op.create_index('ix_accounts_name_trgm', 'accounts', ['name'], postgresql_using='gin',
                    postgresql_ops={'name': 'gin_trgm_ops'})


def downgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.drop_index('ix_accounts_name_trgm', table_name='accounts')
    op.drop_index('ix_accounts_id_trgm', table_name='accounts')
    # The extension stays: other objects may use it, and dropping it needs its owner.
