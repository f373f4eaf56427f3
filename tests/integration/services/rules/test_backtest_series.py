"""The backtest's daily series (one read per metric for the whole period) answer exactly
what the per-day queries answer: same metric values and change details every day, same
firings and evidence, on both databases, over a varied synthetic history (gaps, users
coming and going, accounts going quiet or starting late, activity only before the
replayed period, windows reaching past the start of the data)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta

import yaml
from sqlalchemy import select

from services.ingest import interface
from services.ingest.models import Account, RawEvent, UsageDaily, UserActivityDaily
from services.rules.backtest.series import DailySeries
from services.rules.backtest.service import run_backtest
from services.rules.evaluation.engine import Measurements
from services.rules.language import leaves, parse_rule
from services.rules.language.ast import Metric
from services.rules.models import HealthScore
from shared.db import transaction, upsert
from tests.support.helpers import ROOT

UTC = UTC
STARTER = ROOT / "services" / "rules" / "starter"
DAY0 = date(2026, 1, 1)  # first day of data
START, END = date(2026, 2, 10), date(2026, 3, 31)  # replayed; data stops on Mar 20


def seed(session_factory) -> None:
    rng = random.Random(7)
    now = datetime(2026, 4, 1, tzinfo=UTC)
    accounts, usage, activity = [], [], []
    kinds = ["steady", "gappy", "fades", "late", "ancient", "bursty", "empty", "churny", "weekly", "single"]
    for n, kind in enumerate(kinds):
        a = f"{kind}-{n}"
        seats = [10, 3, None, 8, 5, 2, 4, 6, 0, 1][n]
        accounts.append(
            {
                "id": a,
                "seats": seats,
                "signup_date": DAY0 - timedelta(days=30 * n),
                "traits": {},
                "lifecycle_stage": "onboarding" if n % 2 else "active",
                "renewal_date": date(2026, 3, 1 + n),
                "created_at": now,
                "updated_at": now,
                "first_seen_at": now,
                "last_seen_at": now,
            }
        )
        if kind == "ancient":  # one login long before the period, and one 200 days before that
            usage.append({"account_id": a, "day": DAY0 - timedelta(days=20), "event_name": "login", "count": 1})
            usage.append({"account_id": a, "day": DAY0 - timedelta(days=220), "event_name": "login", "count": 1})
            activity.append({"account_id": a, "day": DAY0 - timedelta(days=20), "user_id": "u0", "count": 1})
            continue
        if kind == "empty":
            continue
        pool = [f"u{i}" for i in range(rng.randint(2, 9))]
        for d in range(80):  # Jan 1 .. Mar 21
            day = DAY0 + timedelta(days=d)
            if (kind == "fades" and d > 45) or (kind == "late" and d < 50) or (kind == "gappy" and (d // 6) % 2):
                continue
            if (kind == "weekly" and d % 7) or (kind == "single" and d not in (41, 55)):
                continue
            if kind == "churny":  # users come and go: a sliding group
                users = [f"c{k}" for k in range(d // 5, d // 5 + 3) if rng.random() < 0.6]
            elif kind == "bursty":
                users = pool if d % 13 == 0 else pool[:1] if rng.random() < 0.3 else []
            else:
                users = [u for u in pool if rng.random() < 0.5]
            if not users:
                continue
            logins = [u for u in users if rng.random() < 0.7]
            if logins:
                usage.append({"account_id": a, "day": day, "event_name": "login", "count": len(logins)})
            if rng.random() < 0.4:
                usage.append({"account_id": a, "day": day, "event_name": "export_run", "count": rng.randint(0, 4)})
            activity.extend({"account_id": a, "day": day, "user_id": u, "count": 1} for u in users)
    with transaction(session_factory) as s:
        upsert(s, Account.__table__, accounts, ["id"])
        upsert(s, UsageDaily.__table__, usage, ["account_id", "day", "event_name"])
        upsert(s, UserActivityDaily.__table__, activity, ["account_id", "day", "user_id"])


METRICS = [
    {"metric": "count", "event": "login", "window": "1d"},
    {"metric": "count", "event": "export_run", "window": "7d"},
    {"metric": "active_days", "window": "14d"},
    {"metric": "active_days", "event": "export_run", "window": "28d"},
    {"metric": "active_users", "window": "1d"},
    {"metric": "active_users", "window": "7d"},
    {"metric": "active_users", "window": "28d"},
    {"metric": "seat_utilisation", "window": "28d"},
    {"metric": "days_since", "event": "login"},
    {"metric": "days_since", "event": "export_run"},
    {"metric": "change", "of": "active_users", "window": "7d", "baseline": "28d"},
    {"metric": "change", "of": "active_users", "window": "14d", "baseline": "28d"},
    {"metric": "change", "of": "active_users", "window": "1d", "baseline": "3d"},
    {"metric": "change", "of": "count", "event": "login", "window": "7d", "baseline": "21d"},
    {"metric": "change", "of": "active_days", "window": "7d", "baseline": "14d"},
    {"metric": "change", "of": "active_days", "event": "export_run", "window": "7d", "baseline": "14d"},
]


def rule(rid: str, condition: dict, trigger: dict | None = None, cooldown: str = "1d") -> dict:
    return {
        "id": rid,
        "name": rid,
        "kind": "churn_risk",
        "trigger": trigger or {"schedule": {}},
        "condition": condition,
        "cooldown": cooldown,
    }


def rules() -> list:
    out = [parse_rule(yaml.safe_load(p.read_text())) for p in sorted(STARTER.glob("*.yaml"))]
    for i, m in enumerate(METRICS):
        for k, (op, value) in enumerate(((">=", 0), ("<", 3), (">=", -40), ("<=", 20))):
            out.append(parse_rule(rule(f"m{i}-{k}", {**m, "op": op, "value": value})))
    out.append(
        parse_rule(
            rule(
                "mixed",
                {
                    "any": [
                        {
                            "all": [
                                {"metric": "change", "of": "active_users", "window": "7d", "baseline": "28d", "op": "<=", "value": -20},
                                {"metric": "days_since", "event": "login", "op": "<", "value": 5},
                            ]
                        },
                        {"not": {"metric": "active_users", "window": "14d", "op": ">=", "value": 2}},
                    ]
                },
                cooldown="3d",
            )
        )
    )
    out.append(
        parse_rule(rule("on-login", {"metric": "active_days", "window": "28d", "op": "<", "value": 20}, trigger={"events": ["login"]}))
    )
    return out


def test_daily_series_give_the_per_day_answers(session_factory):
    seed(session_factory)
    defs = rules()
    with session_factory() as s:
        for d in defs:
            for lookback in (400, 30):
                fast = run_backtest(s, d, START, END, lookback_days=lookback)
                slow = run_backtest(s, d, START, END, lookback_days=lookback, per_day_queries=True)
                assert fast.firings == slow.firings, (d.id, lookback)
                assert fast.evaluated_days == slow.evaluated_days
    # Somewhere, every kind of metric fires (the comparison above is not vacuous).
    # In chunks of accounts (10 accounts: chunks of 3, 3, 3 and 1), each with its own series:
    # the same firings, in the same order; with ``evidence``, only the first keep theirs.
    with session_factory() as s:
        for d in defs:
            whole = run_backtest(s, d, START, END)
            assert run_backtest(s, d, START, END, chunk_accounts=3).firings == whole.firings, d.id
            few = run_backtest(s, d, START, END, chunk_accounts=3, evidence=2).firings
            assert few[:2] == whole.firings[:2] and [(day, a, None) for day, a, _ in whole.firings[2:]] == few[2:], d.id

    with session_factory() as s:
        fired = {d.id for d in defs if run_backtest(s, d, START, END, per_day_queries=True).firings}
    for i in range(len(METRICS)):
        assert any(f.startswith(f"m{i}-") for f in fired), METRICS[i]


class StrictSeries(DailySeries):
    """Fails instead of handing a question back to the per-day queries."""

    def __getattribute__(self, name):
        attr = super().__getattribute__(name)
        if name not in ("event_counts", "active_user_counts", "active_days", "chunked_metric", "account_last_day", "health_scores"):
            return attr

        def strict(*args):
            out = attr(*args)
            assert out is not None, (name, args)
            return out

        return strict


def test_daily_series_metric_values_every_day(session_factory):
    seed(session_factory)
    metrics = [m for d in rules() for m in leaves(d.condition) if isinstance(m, Metric)]
    span = max((m.window or 0) + (m.baseline or 0) for m in metrics)
    with session_factory() as s:
        for lookback in (400, 30):
            series = StrictSeries(s, START, END, span + 1)
            by_id = [interface.account_ids_after(s, None, 3)]  # a backtest's chunks of accounts
            while len(by_id[-1]) == 3:
                by_id.append(interface.account_ids_after(s, by_id[-1][-1], 3))
            assert [len(c) for c in by_id] == [3, 3, 3, 1] and sorted(sum(by_id, [])) == sorted(interface.account_ids(s))
            chunk_series = [StrictSeries(s, START, END, span + 1, c) for c in by_id]
            for i in range((END - START).days + 1):
                now = datetime.combine(START + timedelta(days=i + 1), time.min, tzinfo=UTC) - timedelta(microseconds=1)
                fast = Measurements(s, now, None, as_of=True, lookback_days=lookback, series=series)
                slow = Measurements(s, now, None, as_of=True, lookback_days=lookback)
                # A chunk's series (a backtest in chunks of accounts) reads and answers its accounts only.
                by_chunk = [
                    Measurements(s, now, c, as_of=True, lookback_days=lookback, series=cs)
                    for c, cs in zip(by_id, chunk_series, strict=True)
                ]
                for m in metrics:
                    assert fast.metric(m) == slow.metric(m), (now, m.label)
                    values, default = slow.metric(m)
                    for c, meas in zip(by_id, by_chunk, strict=True):
                        assert meas.metric(m) == ({a: v for a, v in values.items() if a in c}, default), (now, m.label, c)
                    for a in slow.population:
                        assert fast.detail(m, a) == slow.detail(m, a), (now, m.label, a)
                    if m.metric == "change":  # the series' answer as a mapping (columns for active users) is the query's
                        ranges = [
                            interface.window_days(now, m.window_days, k * m.window_days)
                            for k in range(m.baseline_days // m.window_days + 1)
                        ]
                        chunks = series.chunked_metric(m.of, m.event, ranges)
                        expected = interface.chunked_metric(s, m.of, m.event, ranges, None)
                        assert dict(chunks) == expected and len(chunks) == len(expected), (now, m.label)
                        assert all(chunks.get(a) == expected.get(a) for a in slow.population), (now, m.label)


def test_distinct_active_users_from_masks_match_a_count_over_the_rows(session_factory):
    """The activity masks (one aggregate per user) against a plain count over the stored
    user-days, done here in Python: every account, every day, windows inside one
    64-day mask word and across two."""
    seed(session_factory)
    with session_factory() as s:
        rows = s.execute(select(UserActivityDaily.account_id, UserActivityDaily.day, UserActivityDaily.user_id)).all()
        series = DailySeries(s, START, END, 60)
        for window in (1, 7, 14, 28, 65):
            got = series.users(window)
            for i in range(series.length):
                day = series.lo + timedelta(days=i)
                first = max(series.lo, day - timedelta(days=window - 1))
                expected: dict[str, set] = {}
                for a, d, u in rows:
                    if first <= d <= day:
                        expected.setdefault(a, set()).add(u)
                assert {a: c[i] for a, c in got.items() if c[i]} == {a: len(us) for a, us in expected.items()}, (window, day)


def test_an_edit_that_only_moves_firings_earlier_shows_the_shift(session_factory, settings):
    """Issue 19, finding 5: editing no-login-14d from 14 to 10 days showed "Newly firing
    (0) / Stop firing (0)": the same account fires, four days earlier. The diff shows
    both versions' firings per day and each account's first firing under each."""
    from services.rules.backtest.service import backtest_request
    from services.rules.rules.schemas import BacktestIn
    from tests.support.helpers import T0
    from tests.support.rules import no_login_rule, seed_one_fading_account

    start, end = seed_one_fading_account(session_factory, T0)
    edited = no_login_rule(condition={"metric": "days_since", "event": "login", "op": ">=", "value": 10})
    body = BacktestIn(rule_id="no-login-14d", rule=edited, start=start, end=end, compare_with_current=True)
    with session_factory() as s:
        out = backtest_request(s, body, settings)
    diff = out["diff"]
    assert (diff["newly_firing"], diff["stop_firing"], diff["both"]) == ([], [], 1)
    first = diff["first_firing"]
    assert (first["earlier"], first["later"], first["same_day"], first["median_days_earlier"]) == (1, 0, 0, 4.0)
    [fades] = first["accounts"]
    assert fades["account_id"] == "fades" and fades["days_earlier"] == 4
    assert date.fromisoformat(fades["current_first"]) - date.fromisoformat(fades["edited_first"]) == timedelta(days=4)
    by_day = {d["day"]: (d["edited"], d["current"]) for d in diff["per_day"]}
    assert by_day[fades["edited_first"]] == (1, 0) and by_day[fades["current_first"]][1] == 1
    assert (
        sum(e for e, _ in by_day.values()) == out["total_firings"]
        and sum(c for _, c in by_day.values()) == out["compared_with"]["total_firings"]
    )


def _end_of(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC) - timedelta(microseconds=1)


def seed_audiences(session_factory) -> None:
    """Accounts whose audience filters change inside the replayed period, several exactly at
    a day's boundary (to the microsecond, to the day), and with missing values."""
    now = datetime(2026, 4, 1, tzinfo=UTC)
    mid = date(2026, 3, 1)
    accounts = []
    for n in range(24):
        edge = _end_of(mid + timedelta(days=n % 6)) - timedelta(days=14)  # exactly 14 days before a day's clock
        accounts.append(
            {
                "id": f"aud-{n:02d}",
                "signup_date": None if n % 3 == 0 else mid - timedelta(days=n),
                "first_seen_at": None if n % 8 == 0 else edge + timedelta(microseconds=n % 2) + timedelta(days=n // 12),
                "lifecycle_stage": [None, "onboarding", "active", "onboarding"][n % 4],
                "lifecycle_stage_changed_at": None if n % 5 == 0 else edge + timedelta(hours=n),
                "renewal_date": None if n % 7 == 0 else mid + timedelta(days=n - 4),
                "segment": ["smb", None, "enterprise"][n % 3],
                "plan": ["pro", "free"][n % 2],
                "arr": None if n % 6 == 1 else 1000.0 * (n % 5),
                "seats": 3,
                "traits": {},
                "created_at": now,
                "updated_at": now,
                "last_seen_at": now,
            }
        )
    with transaction(session_factory) as s:
        upsert(s, Account.__table__, accounts, ["id"])


AUDIENCES = [
    {"tenure_days": {"min": 14}},
    {"tenure_days": {"min": 14.5}},
    {"tenure_days": {"max": 20}},
    {"tenure_days": {"min": 3, "max": 30.25}},
    {"days_in_stage": {"min": 14}},
    {"days_in_stage": {"max": 15.5}},
    {"days_in_stage": {"min": 10, "max": 20}},
    {"renewal_within_days": 0},
    {"renewal_within_days": 7},
    {"segment": ["smb", "enterprise"], "plan": ["pro"]},
    {"lifecycle_stage": ["onboarding"], "tenure_days": {"min": 14}},
    {"arr": {"min": 1000, "max": 3000}},
    {"arr": {"min": 2000}, "renewal_within_days": 30, "days_in_stage": {"min": 1}},
]


def test_audiences_from_the_rows_are_the_per_day_queries(session_factory):
    """A backtest answers audience filters from the account rows its series read once
    (``ingest.admitted_spans``); every day and every chunk, the accounts are the ones
    ``accounts_where`` answers at that day's clock, boundaries to the microsecond included."""
    seed(session_factory)
    seed_audiences(session_factory)
    audiences = [
        parse_rule(rule(f"a{k}", {"metric": "count", "event": "login", "window": "1d", "op": ">=", "value": 0}) | {"audience": a})
        for k, a in enumerate(AUDIENCES)
    ]
    with session_factory() as s:
        chunks = [interface.account_ids_after(s, None, 7)]
        while len(chunks[-1]) == 7:
            chunks.append(interface.account_ids_after(s, chunks[-1][-1], 7))
        series = [DailySeries(s, START, END, 1, c) for c in [None, *chunks]]
        for d in audiences:
            answers = []
            for i in range((END - START).days + 1):
                now = _end_of(START + timedelta(days=i))
                for c, cs in zip([None, *chunks], series, strict=True):
                    expected = interface.accounts_where(s, d.audience, now, c)
                    assert cs.audience(d.audience, now) == expected, (d.audience, now, c)
                    assert Measurements(s, now, c, as_of=True, series=cs).audience(d.audience) == expected
                    if c is None:
                        answers.append(expected)
            # Not vacuous: the audience moves inside the period, or (fixed filters) leaves some accounts out.
            moves = len({frozenset(a) for a in answers}) > 1
            assert moves or 0 < len(answers[0]) < len(interface.account_ids(s)), d.audience
        # Not a day's clock: the series hands the question back.
        assert series[0].audience(audiences[0].audience, _end_of(START) - timedelta(hours=1)) is None
        assert series[0].audience(audiences[0].audience, _end_of(END + timedelta(days=1))) is None
    with session_factory() as s:
        for d in audiences:
            slow = run_backtest(s, d, START, END, per_day_queries=True).firings
            assert slow, d.audience
            assert run_backtest(s, d, START, END, chunk_accounts=5).firings == slow, d.audience


def seed_health(session_factory) -> None:
    """Health scores for the seeded accounts: daily, with gaps, rows without a score, a late
    start, scores only long before the period, and none at all."""
    rng = random.Random(11)
    rows = []
    with session_factory() as s:
        ids = sorted(interface.account_ids(s))
    for n, a in enumerate(ids):
        if n % 5 == 4:
            continue  # never scored
        for d in range(-60, 95):
            day = DAY0 + timedelta(days=d)
            if (n % 5 == 1 and rng.random() < 0.4) or (n % 5 == 2 and d < 70) or (n % 5 == 3 and d > -30):
                continue
            score = None if rng.random() < 0.1 else round(rng.uniform(0, 100), 1)
            rows.append(
                {
                    "account_id": a,
                    "day": day,
                    "score": score,
                    "label": None,
                    "model_version": 1,
                    "components": [],
                    "scored_at": datetime.combine(day, time(3), tzinfo=UTC),
                }
            )
    with transaction(session_factory) as s:
        upsert(s, HealthScore.__table__, rows, ["account_id", "day"])


HEALTH_METRICS = [{"metric": "health"}, *({"metric": "health_change", "window": w} for w in ("1d", "7d", "14d", "30d"))]


def test_health_scores_from_one_read_are_the_per_day_queries(session_factory):
    """A backtest reads a chunk's health scores once for the period; every day, the current
    score and the change over each window are those the per-day queries answer."""
    seed(session_factory)
    seed_health(session_factory)
    defs = [
        parse_rule(yaml.safe_load((STARTER / "health-fell-20.yaml").read_text())),
        *(
            parse_rule(rule(f"h{k}-{j}", {**m, "op": op, "value": v}))
            for k, m in enumerate(HEALTH_METRICS)
            for j, (op, v) in enumerate((("<=", 30), (">=", 60)) if m["metric"] == "health" else (("<=", -20), (">=", 20)))
        ),
    ]
    metrics = [m for d in defs for m in leaves(d.condition) if isinstance(m, Metric)]
    span = max((m.window or 0) + (m.baseline or 0) for m in metrics)
    with session_factory() as s:
        chunks = [interface.account_ids_after(s, None, 3)]
        while len(chunks[-1]) == 3:
            chunks.append(interface.account_ids_after(s, chunks[-1][-1], 3))
        series = [StrictSeries(s, START, END, span + 1, c) for c in [None, *chunks]]
        for i in range((END - START).days + 1):
            now = _end_of(START + timedelta(days=i))
            for c, cs in zip([None, *chunks], series, strict=True):
                fast, slow = Measurements(s, now, c, as_of=True, series=cs), Measurements(s, now, c, as_of=True)
                for m in metrics:
                    assert fast.metric(m) == slow.metric(m), (now, m.label, c)
    with session_factory() as s:
        for d in defs:
            slow = run_backtest(s, d, START, END, per_day_queries=True).firings
            assert slow, d.id
            assert run_backtest(s, d, START, END, chunk_accounts=3).firings == slow, d.id
            assert run_backtest(s, d, START, END).firings == slow, d.id


def test_event_triggered_backtests_read_each_chunks_events(session_factory):
    """An event-triggered rule whose condition reads the event (nps-detractor) replays
    each chunk from that chunk's stored events only: the firings, their order within a
    day (by the event's time) and evidence are those of the whole population at once."""
    seed(session_factory)
    rng = random.Random(5)
    with session_factory() as s:
        ids = sorted(interface.account_ids(s))
    events = []
    for k in range(300):
        a = rng.choice(ids)
        at = datetime.combine(START, time(0), tzinfo=UTC) + timedelta(minutes=rng.randrange(60 * 24 * 50))
        props = {"scale": rng.choice(["nps", "nps", "csat"]), "score": rng.randint(0, 10)}
        events.append(
            {
                "event_id": f"e{k}",
                "account_id": a,
                "user_id": f"u{k % 4}",
                "type": "track",
                "name": "survey_answered",
                "timestamp": at,
                "properties": props,
                "received_at": at,
            }
        )
    with transaction(session_factory) as s:
        upsert(s, RawEvent.__table__, events, ["event_id"])
    d = parse_rule(yaml.safe_load((STARTER / "nps-detractor.yaml").read_text()))
    with session_factory() as s:
        whole = run_backtest(s, d, START, END, per_day_queries=True).firings
        assert len({a for _, a, _ in whole}) > 3, whole  # several accounts, in every chunk
        assert run_backtest(s, d, START, END, chunk_accounts=3).firings == whole
        assert run_backtest(s, d, START, END).firings == whole
