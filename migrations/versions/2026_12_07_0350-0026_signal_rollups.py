"""signal rollups: per UTC day and kind, and each account's latest signal

At 1,000,000 signals the console's overview grouped the ~300,000 of its 30 days by day
and kind (0.08-0.12 s in PostgreSQL alone at load 2.5-4, index-only already), and the
accounts list's "signal in the last 30 days" took the distinct accounts among them
(0.14 s). Both now read a rollup kept by the signals' one writer
(``services/rules/signals/repository.py`` ``insert_signals``) in the same transaction:
``signal_day_counts`` (a row per UTC day and kind) and ``account_last_signals`` (each
account's latest ``fired_at``; an account has a signal since T exactly when it is at or
after T, as signals are never deleted). Backfilled here from the signals.

Revision ID: 0026_signal_rollups
Revises: 0025_console_counts_covered
Create Date: 2026-12-07 03:50:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0026_signal_rollups'
down_revision = '0025_console_counts_covered'
branch_labels = None
depends_on = None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == 'postgresql'
    op.create_table(
        'signal_day_counts',
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('kind', sa.String(64), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('day', 'kind', name='pk_signal_day_counts'),
    )
    op.create_table(
        'account_last_signals',
        sa.Column('account_id', sa.String(128), nullable=False),
        sa.Column('fired_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('account_id', name='pk_account_last_signals'),
    )
    op.create_index('ix_account_last_signals_fired', 'account_last_signals', ['fired_at', 'account_id'])
    day = "date(timezone('UTC', fired_at))" if postgres else 'date(fired_at)'
    op.execute(f'INSERT INTO signal_day_counts (day, kind, n) SELECT {day}, kind, count(*) FROM signals GROUP BY {day}, kind')
    op.execute('INSERT INTO account_last_signals (account_id, fired_at) SELECT account_id, max(fired_at) FROM signals GROUP BY account_id')


def downgrade() -> None:
    op.drop_table('account_last_signals')
    op.drop_table('signal_day_counts')
