"""The signals' rollups (migration 0026: per UTC day and kind, and each account's latest
rule signal, a segment's left out since 0029), kept by their one writer in the same
transaction, equal what the signals themselves say, on the seeded world and after more
writes (both databases)."""

from __future__ import annotations

import importlib.util
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, text

from services.rules.models import AccountLastSignal, SignalRecord
from services.rules.signals import repository as repo

FAR = (date(2000, 1, 1), date(2100, 1, 1))


RULES_ONLY = SignalRecord.rule_id.not_like("segment:%")  # a segment's entering or leaving is no rule signal (migration 0029)
MIGRATION_0029 = next((Path(__file__).parents[4] / "migrations" / "versions").glob("*-0029_last_signal_rules_only.py"))


def _latest_raw(s) -> dict[str, datetime]:
    q = select(SignalRecord.account_id, func.max(SignalRecord.fired_at)).where(RULES_ONLY).group_by(SignalRecord.account_id)
    return dict(s.execute(q).all())


def _latest_rollup(s) -> dict[str, datetime]:
    return dict(s.execute(select(AccountLastSignal.account_id, AccountLastSignal.fired_at)).all())


def _agree(s, now: datetime) -> None:
    assert sorted(repo.counts_by_day_and_kind(s, *FAR)) == sorted(repo.counts_by_day_and_kind_raw(s, *FAR))
    latest = _latest_raw(s)
    assert _latest_rollup(s) == {a: t.astimezone(UTC) for a, t in latest.items()}
    for days in (0, 1, 7, 30, 90):
        since = now - timedelta(days=days)
        raw = set(s.scalars(select(SignalRecord.account_id).where(SignalRecord.fired_at >= since, RULES_ONLY)))
        assert set(s.scalars(repo.accounts_signalled_since(s, since))) == raw, days


def _signal(i: int, account_id: str, kind: str, at: datetime, rule_id: str = "rollup-test") -> dict:
    return {
        "signal_id": f"rollup-test-{i}",
        "rule_id": rule_id,
        "rule_version": 1,
        "rule_name": "rollup test",
        "account_id": account_id,
        "user_id": None,
        "kind": kind,
        "severity": "low",
        "fired_at": at,
        "evidence": {},
        "trigger": "schedule",
        "event_id": None,
        "decision_due_at": None,
        "republished": 0,
    }


async def test_the_signal_rollups_equal_the_signals_and_follow_their_writer(console_world, seeded):
    """Planted: with the writer counting every row it was given (not only the new ones),
    the redelivered batch below counted twice and this failed; with the latest updated
    unconditionally, the older signal moved an account's latest back and this failed."""
    now = console_world.now
    with console_world.session_factory() as s:
        assert s.scalar(select(func.count()).select_from(SignalRecord))  # the seeded world has signals
        _agree(s, now)  # the seeded signals went through the writer
        account = s.scalar(select(SignalRecord.account_id).order_by(SignalRecord.fired_at.desc()).limit(1))
        fresh = "rollup-test-account"
        late, early = now + timedelta(hours=1), now - timedelta(days=40, hours=3)
        batch = [
            _signal(1, account, "churn_risk", late),
            _signal(2, account, "churn_risk", early),  # older than the account's latest: leaves it
            _signal(3, fresh, "rollup_kind", early),
            _signal(4, fresh, "rollup_kind", early + timedelta(minutes=1)),
            _signal(6, fresh, "segment_entered", late, rule_id="segment:rollup"),  # not the account's latest rule signal
            _signal(7, "rollup-segment-only", "segment_left", late, rule_id="segment:rollup"),  # no rule signal at all
        ]
        assert repo.insert_signals(s, batch) == {b["signal_id"] for b in batch}
        _agree(s, now)
        assert repo.insert_signals(s, batch) == set()  # redelivered: nothing new, nothing counted
        _agree(s, now)
        assert repo.insert_signals(s, [_signal(5, fresh, "rollup_kind", now - timedelta(days=50))]) == {"rollup-test-5"}
        _agree(s, now)
        assert (early.date(), "rollup_kind", 2) in repo.counts_by_day_and_kind(s, early.date(), early.date())
        # A tick's worth: past COPY_THRESHOLD rows PostgreSQL's upsert goes through a staged COPY.
        many = [_signal(100 + i, f"rollup-many-{i}", "rollup_kind", now - timedelta(minutes=i)) for i in range(300)]
        assert len(repo.insert_signals(s, many)) == 300
        _agree(s, now)
        assert "rollup-segment-only" not in _latest_rollup(s)
        # Migration 0029 rebuilds the rollup to the same rows from the signals (its SQL, as Alembic runs it).
        spec = importlib.util.spec_from_file_location("migration_0029", MIGRATION_0029)
        migration = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(migration)
        s.execute(text("DELETE FROM account_last_signals"))
        s.execute(text(migration.REBUILD.format(where=migration.RULE_SIGNALS)))
        _agree(s, now)
        s.rollback()  # the shared world stays as seeded
