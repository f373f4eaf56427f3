"""contract outcomes: contract_outcomes, and accounts.contract_state(_since)

Lagging outcomes (issue 21, item 2; docs/events.md, "contract"): product apps and CRMs
send contract outcomes (renewed, churned, contracted, expanded; ARR before and after;
an effective date) as ``contract`` events, and CS Ops record them over the API. Each is
stored once per event id; an account's contract state (active, churned) follows from
its latest by effective date.

Revision ID: 0016_contract_outcomes
Revises: 0015_content_library
Create Date: 2026-12-06 19:30:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import shared.db

revision = '0016_contract_outcomes'
down_revision = '0015_content_library'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'contract_outcomes',
        sa.Column('event_id', sa.String(length=128), nullable=False),
        sa.Column('account_id', sa.String(length=128), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('arr_before', sa.Float(), nullable=False),
        sa.Column('arr_after', sa.Float(), nullable=False),
        sa.Column('effective_date', sa.Date(), nullable=False),
        sa.Column('note', sa.String(length=500), nullable=True),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('recorded_by', sa.String(length=128), nullable=True),
        sa.Column('occurred_at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('received_at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_contract_outcomes_account_id_accounts')),
        sa.PrimaryKeyConstraint('event_id', name=op.f('pk_contract_outcomes')),
    )
    op.create_index('ix_contract_outcomes_account', 'contract_outcomes', ['account_id', 'effective_date'], unique=False)
    op.create_index('ix_contract_outcomes_effective_date', 'contract_outcomes', ['effective_date'], unique=False)
    with op.batch_alter_table('accounts') as batch:
        batch.add_column(sa.Column('contract_state', sa.String(length=16), nullable=True))
        batch.add_column(sa.Column('contract_state_since', sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('accounts') as batch:
        batch.drop_column('contract_state_since')
        batch.drop_column('contract_state')
    op.drop_index('ix_contract_outcomes_effective_date', table_name='contract_outcomes')
    op.drop_index('ix_contract_outcomes_account', table_name='contract_outcomes')
    op.drop_table('contract_outcomes')
