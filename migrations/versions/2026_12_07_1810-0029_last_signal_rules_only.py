"""account_last_signals: each account's latest rule signal, a segment's left out

The accounts list's "signal in 30 days" read this rollup of every signal, and a named
segment's entering or leaving is a signal (rule id ``segment:<id>``, kind
``segment_entered``/``segment_left``): with the starter segments every account had one,
so after `touchline demo` the filter listed 103 accounts of 103. The rollup now keeps
each account's latest signal of a rule (services/rules/signals/repository.py,
``insert_signals``); rebuilt here from the signals.

Revision ID: 0029_last_signal_rules_only
Revises: 0028_messages_claim_order
Create Date: 2026-12-07 18:10:00
"""
from __future__ import annotations

from alembic import op

revision = '0029_last_signal_rules_only'
down_revision = '0028_messages_claim_order'
branch_labels = None
depends_on = None

RULE_SIGNALS = "WHERE rule_id NOT LIKE 'segment:%'"  # services/rules/language/segment.py, SIGNAL_PREFIX
REBUILD = 'INSERT INTO account_last_signals (account_id, fired_at) SELECT account_id, max(fired_at) FROM signals {where} GROUP BY account_id'


def upgrade() -> None:
    op.execute('DELETE FROM account_last_signals')
    op.execute(REBUILD.format(where=RULE_SIGNALS))


def downgrade() -> None:
    op.execute('DELETE FROM account_last_signals')
    op.execute(REBUILD.format(where=''))
