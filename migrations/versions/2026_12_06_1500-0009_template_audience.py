"""template audience: outreach_templates.audience, customer copy or an internal message

A template is written either for the customer (a win-back email, an onboarding nudge)
or for the team (an engagement notice to a pooled CSM, a brief to the account owner).
Playbooks are checked against it on save, and the send step against it at run time, so
customer copy never reaches an internal address (the account owner) and an internal
brief never reaches a customer. Existing templates are customer copy, except the
engagement notices.

Revision ID: 0009_template_audience
Revises: 0008_account_search_trgm
Create Date: 2026-12-06 15:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009_template_audience'
down_revision = '0008_account_search_trgm'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outreach_templates') as batch:
        batch.add_column(sa.Column('audience', sa.String(length=16), nullable=False, server_default='customer'))
    op.execute("UPDATE outreach_templates SET audience = 'internal' WHERE id IN ('engagement-assigned', 'engagement-reminder')")


def downgrade() -> None:
    with op.batch_alter_table('outreach_templates') as batch:
        batch.drop_column('audience')
