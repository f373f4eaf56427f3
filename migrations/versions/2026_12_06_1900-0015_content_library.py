"""content library: content_resources, and messages.resource_id

The content library (issue 22, docs/content.md): resources (article, video, webinar,
course, checklist, template) tagged by goal, use case, industry, company size,
lifecycle stage, segment, role and product feature. A ``recommend`` step records on
each message the resource it chose (``messages.resource_id``; its reasons in the
payload), so a contact never receives the same resource twice.

Revision ID: 0015_content_library
Revises: 0014_health
Create Date: 2026-12-06 19:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import shared.db

revision = '0015_content_library'
down_revision = '0014_health'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')
TAGS = ('goals', 'use_cases', 'industries', 'company_sizes', 'lifecycle_stages', 'segments', 'roles', 'features')


def upgrade() -> None:
    op.create_table(
        'content_resources',
        sa.Column('id', sa.String(length=128), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('title', sa.String(length=300), nullable=False),
        sa.Column('url', sa.String(length=2000), nullable=False),
        sa.Column('summary', sa.Text(), nullable=False),
        sa.Column('language', sa.String(length=16), nullable=False),
        *(sa.Column(tag, JSON, nullable=False) for tag in TAGS),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('created_at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_content_resources')),
    )
    with op.batch_alter_table('messages') as batch:
        batch.add_column(sa.Column('resource_id', sa.String(length=128), nullable=True))
        batch.create_index('ix_messages_resource', ['resource_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('messages') as batch:
        batch.drop_index('ix_messages_resource')
        batch.drop_column('resource_id')
    op.drop_table('content_resources')
