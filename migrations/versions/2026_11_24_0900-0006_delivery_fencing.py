"""delivery fencing: messages.lease_token, the claim's fencing token

Revision ID: 0006_delivery_fencing
Revises: 0007_engagements
Create Date: 2026-11-24 09:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006_delivery_fencing'
down_revision = '0007_engagements'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('messages') as batch:
        batch.add_column(sa.Column('lease_token', sa.String(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('messages') as batch:
        batch.drop_column('lease_token')
