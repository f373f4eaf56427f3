"""message audience: messages.audience, a customer touch or an internal message

A message to the team (an engagement notice to a pooled CSM, an owner brief, a webhook)
is not a customer touch: the contact policy counts only ``customer`` messages. With the
column, engagement notices carry their account (they had account_id "" so as not to be
counted, and so were listed under no account).

Revision ID: 0012_message_audience
Revises: 0011_dead_letters
Create Date: 2026-12-06 16:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012_message_audience'
down_revision = '0011_dead_letters'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('messages') as batch:
        batch.add_column(sa.Column('audience', sa.String(length=16), nullable=False, server_default='customer'))
    op.execute("UPDATE messages SET audience = 'internal' WHERE channel = 'webhook' OR step_id LIKE 'engagement.%' AND channel <> 'csm'")


def downgrade() -> None:
    with op.batch_alter_table('messages') as batch:
        batch.drop_column('audience')
