"""surveys: survey_answers

A ``survey`` playbook step sends NPS (0-10) or CSAT (1-5) with one-click score links
(issue 22, item 5; docs/surveys.md). Each contact's answer to a survey is one row, the
latest answer replacing the earlier one; its ``survey_answered`` event goes to ingest
through the outbox. Results by day read ``(survey_id, answered_at)``.

Revision ID: 0019_survey_answers
Revises: 0018_segments
Create Date: 2026-12-06 22:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import shared.db

revision = '0019_survey_answers'
down_revision = '0018_segments'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'survey_answers',
        sa.Column('survey_id', sa.String(length=64), nullable=False),
        sa.Column('account_id', sa.String(length=128), nullable=False),
        sa.Column('user_id', sa.String(length=128), nullable=False),
        sa.Column('scale', sa.String(length=8), nullable=False),
        sa.Column('score', sa.Integer(), nullable=False),
        sa.Column('comment', sa.Text(), nullable=False),
        sa.Column('message_id', sa.String(length=128), nullable=True),
        sa.Column('playbook_id', sa.String(length=128), nullable=True),
        sa.Column('answers', sa.Integer(), nullable=False),
        sa.Column('first_answered_at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('answered_at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('survey_id', 'account_id', 'user_id', name=op.f('pk_survey_answers')),
    )
    op.create_index('ix_survey_answers_survey_day', 'survey_answers', ['survey_id', 'answered_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_survey_answers_survey_day', table_name='survey_answers')
    op.drop_table('survey_answers')
