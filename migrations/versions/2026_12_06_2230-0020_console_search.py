"""console search: expression indexes for the one search box

The console's search (services/ingest/repository/search.py) matches accounts by the
start of their name or id and by an email domain (a contact's or the owner's), and
contacts by the start of their name or email and by their email domain. Each condition
is a range or an equality on one of these expression indexes, so a search at 100,000
accounts reads index entries, never the tables. On PostgreSQL the keys are in the "C"
collation (a prefix range is then a byte range); SQLite compares bytes already.

Revision ID: 0020_console_search
Revises: 0019_survey_answers
Create Date: 2026-12-06 22:30:00
"""
from __future__ import annotations

from alembic import op

revision = '0020_console_search'
down_revision = '0019_survey_answers'
branch_labels = None
depends_on = None

INDEXES = {  # name: (table, PostgreSQL expression, SQLite expression)
    'ix_accounts_name_search': ('accounts', 'lower(name) COLLATE "C"', 'lower(name)'),
    'ix_accounts_id_search': ('accounts', 'lower(id) COLLATE "C"', 'lower(id)'),
    'ix_accounts_owner_domain': (
        'accounts', "lower(split_part(owner_email, '@', 2)) COLLATE \"C\"", "lower(substr(owner_email, instr(owner_email, '@') + 1))"
    ),
    'ix_users_name_search': ('users', 'lower(name) COLLATE "C"', 'lower(name)'),
    'ix_users_email_search': ('users', 'lower(email) COLLATE "C"', 'lower(email)'),
    'ix_users_email_domain': ('users', "lower(split_part(email, '@', 2)) COLLATE \"C\"", "lower(substr(email, instr(email, '@') + 1))"),
}


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == 'postgresql'
    for name, (table, pg, lite) in INDEXES.items():
        op.execute(f'CREATE INDEX {name} ON {table} (({pg}))' if postgres else f'CREATE INDEX {name} ON {table} ({lite})')


def downgrade() -> None:
    for name in INDEXES:
        op.execute(f'DROP INDEX {name}')
