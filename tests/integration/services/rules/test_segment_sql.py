"""Account-field predicates tested in SQL (the tick's path: ingest's ``accounts_with_value``)
agree with the same predicates tested in Python over the values read (an event batch's
path), on both databases, on the values where they could part: a missing trait, JSON
null, a number against a numeric string, a boolean against 1, case, an object or an array
where a string is expected, a nested key under a non-object, a key of digits over an
array (PostgreSQL's #> would index it). And a segment tick then an event-path refresh of every account
agree: nothing enters or leaves."""

from __future__ import annotations

from sqlalchemy import event, select

from services.ingest import interface as ingest
from services.rules.evaluation.engine import Measurements
from services.rules.evaluation.segments import SegmentIndex, refresh_accounts, run_segments
from services.rules.language.ast import Field
from services.rules.models import SegmentMember
from services.rules.segments import service as segments
from shared.db import transaction
from tests.support.rules import group
from tests.support.rules import ingest as ingest_events

# t6 has no trait at all; t7 is an account seen only through its plan.
TRAITS: dict[str, dict] = {
    "t1": {"industry": "fintech", "tier": "Gold", "flag": True, "n": 5, "nested": {"a": {"b": "x"}}, "list": {"0": "zero"}},
    "t2": {"industry": "Fintech", "tier": None, "flag": False, "n": 5.0, "nested": {"a": "x"}},
    "t3": {"tier": "gold", "flag": "true", "n": "5", "nested": {"a": ["b"]}, "list": ["zero"]},
    "t4": {"industry": 1, "tier": "", "flag": 1, "n": 1.5, "nested": None},
    "t5": {"industry": {"x": "fintech"}, "tier": ["Gold"], "flag": None, "nested": {"a": {"b": None}}},
    "t6": {},
    "t7": {},
}
# Known traits are columns: plans are lowercase slugs, names any text (case counts).
KNOWN = {
    "t1": {"plan": "pro", "name": "pro"},
    "t2": {"plan": "pro", "name": "Pro"},
    "t3": {"plan": "starter"},
    "t6": {"name": "Six"},
    "t7": {"plan": "pro"},
}


def trait(*path: str) -> tuple[str, ...]:
    return ("account", "traits", *path)


def leaves() -> list[Field]:
    out = []
    for path in (
        trait("industry"),
        trait("tier"),
        trait("flag"),
        trait("n"),
        trait("nested", "a"),
        trait("nested", "a", "b"),
        trait("list", "0"),
    ):
        out += [
            Field(path, "==", "fintech"),
            Field(path, "==", "Fintech"),
            Field(path, "==", "Gold"),
            Field(path, "==", ""),
            Field(path, "==", "x"),
            Field(path, "==", "5"),
            Field(path, "==", "zero"),
            Field(path, "==", True),
            Field(path, "==", False),
            Field(path, "==", 5.0),  # numbers stay in Python on both paths
            Field(path, "!=", "fintech"),
            Field(path, "!=", "Gold"),
            Field(path, "!=", True),
            Field(path, "in", ("fintech", "Gold", "x")),
            Field(path, "in", ("true", "5")),
            Field(path, "in", (1, "fintech")),  # a mixed list stays in Python
            Field(path, "not_in", ("fintech", "Gold")),
            Field(path, "not_in", ("x",)),
            Field(path, "exists", True),
            Field(path, "exists", False),
        ]
    for name in ("plan", "id", "name", "segment"):
        path = ("account", name)
        out += [
            Field(path, "==", "pro"),
            Field(path, "!=", "pro"),
            Field(path, "in", ("pro", "starter")),
            Field(path, "not_in", ("pro",)),
            Field(path, "exists", True),
            Field(path, "exists", False),
        ]
    return out


def world(session_factory, now) -> list[str]:
    ingest_events(session_factory, [group(a, now, **traits, **KNOWN.get(a, {})) for a, traits in TRAITS.items()], now)
    return sorted(TRAITS)


def save(session_factory, obj, now) -> None:
    with transaction(session_factory) as s:
        segments.create(s, segments.parse(obj, 400), "ops:test", now)


def members(session_factory) -> dict[str, set[str]]:
    with transaction(session_factory) as s:
        out: dict[str, set[str]] = {}
        for m in s.scalars(select(SegmentMember)):
            out.setdefault(m.segment_id, set()).add(m.account_id)
        return out


def test_sql_and_python_agree_on_tricky_values(session_factory, clock):
    now = clock.now()
    ids = world(session_factory, now)
    with transaction(session_factory) as s:
        in_sql = Measurements(s, now, None)
        in_python = Measurements(s, now, ids)
        assert in_sql.sql_fields and not in_python.sql_fields
        translated = 0
        for leaf in leaves():
            assert in_sql.matching(leaf) == in_python.matching(leaf), leaf
            translated += ingest.accounts_with_value(s, leaf.path[1:], leaf.op, leaf.value, None) is not None
        # What SQL answers (and so what this test compares): every test but the numeric
        # ones and the mixed list; the key "0" too (t1's object key, never t3's array index).
        assert translated == 7 * 18 + 4 * 6

        # And they are right, not merely equal: a few by hand.
        def holds(path: tuple[str, ...], op: str, value: object) -> set[str]:
            return in_sql.matching(Field(path, op, value))

        assert holds(trait("industry"), "==", "fintech") == {"t1"}  # case counts; an object holding it is not it
        assert holds(trait("industry"), "not_in", ("fintech", "Gold")) == {"t2", "t4"}  # a number passes, an object not
        assert holds(trait("flag"), "==", True) == {"t1"}  # not 1, not "true"
        assert holds(trait("flag"), "!=", True) == {"t2"}
        assert holds(trait("tier"), "exists", False) == {"t2", "t6", "t7"}  # null or missing
        assert holds(trait("tier"), "==", "") == {"t4"}
        assert holds(trait("nested", "a", "b"), "exists", True) == {"t1"}  # null at t5, "a" not an object at t2, t3
        assert holds(trait("n"), "in", ("true", "5")) == {"t3"}  # the string, not the numbers
        assert holds(("account", "plan"), "not_in", ("pro",)) == {"t3"}  # no plan: no answer
        assert holds(("account", "name"), "==", "pro") == {"t1"}
        assert holds(("account", "id"), "exists", True) == set(ids)


def test_the_event_path_agrees_with_the_tick_and_entries_are_explained(session_factory, settings, clock, engine):
    now = clock.now()
    ids = world(session_factory, now)
    save(
        session_factory,
        {
            "id": "gold-or-fintech",
            "name": "Gold or fintech",
            "condition": {
                "any": [
                    {"field": "account.traits.tier", "op": "==", "value": "Gold"},
                    {"field": "account.traits.industry", "op": "in", "value": ["fintech", "Fintech"]},
                ]
            },
        },
        now,
    )
    save(
        session_factory,
        {
            "id": "not-fintech",
            "name": "Not fintech, with a plan",
            "condition": {
                "all": [
                    {"field": "account.traits.industry", "op": "not_in", "value": ["fintech"]},
                    {"field": "account.plan", "op": "exists"},
                ]
            },
        },
        now,
    )
    statements: list[str] = []

    def record(conn, cursor, statement, *rest) -> None:
        statements.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", record)
    report = run_segments(session_factory, settings, now)
    event.remove(engine, "before_cursor_execute", record)
    assert members(session_factory) == {"gold-or-fintech": {"t1", "t2"}, "not-fintech": {"t2"}}  # t4's 1 has no plan
    # Only the entering accounts' traits were read (to explain them), never every account's.
    reads = [q for q in statements if q.startswith("SELECT accounts.id, accounts.traits")]
    assert reads and all(" IN " in q.upper() for q in reads)
    evidence = {(x.rule_id, x.account_id): x.evidence for x in report.signals}
    assert evidence["segment:gold-or-fintech", "t2"]["account.traits.industry"]["value"] == "Fintech"
    assert evidence["segment:gold-or-fintech", "t2"]["account.traits.tier"] == {
        "value": None,
        "op": "==",
        "threshold": "Gold",
        "result": False,
    }

    with transaction(session_factory) as s:
        again = refresh_accounts(s, SegmentIndex(), ids, now, settings)
    assert again.entered == again.left == 0
