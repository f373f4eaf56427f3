"""Contract outcomes (docs/events.md, "contract"): over Kafka and HTTP as ``contract``
events, and recorded over the API; stored once per event id; the account's contract
state follows from them. The real broker, both databases, the simulated clock."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from services.ingest.events.worker import IngestWorker
from services.ingest.models import ContractOutcome, RawEvent
from tests.support.console import sign_in
from tests.support.helpers import T0, auth, committed_offsets, drain, publish, read_dlq, track


def contract(event_id: str, account_id: str, kind: str, arr_before: float, arr_after: float | None, effective: str, **extra) -> dict:
    props = {"kind": kind, "arr_before": arr_before, "effective_date": effective, **extra}
    if arr_after is not None:
        props["arr_after"] = arr_after
    return {
        "event_id": event_id,
        "type": "contract",
        "account_id": account_id,
        "timestamp": (T0 - timedelta(hours=1)).isoformat(),
        "properties": props,
    }


def outcomes(session_factory) -> list[tuple]:
    with session_factory() as s:
        return list(
            s.execute(
                select(
                    ContractOutcome.event_id,
                    ContractOutcome.account_id,
                    ContractOutcome.kind,
                    ContractOutcome.arr_after,
                    ContractOutcome.source,
                ).order_by(ContractOutcome.event_id)
            )
        )


def raw_count(session_factory) -> int:
    with session_factory() as s:
        return s.scalar(select(func.count()).select_from(RawEvent))


async def test_contract_events_over_http_and_kafka_are_stored_once_and_set_the_state(api, topics, keys, session_factory, clock):
    renewal = contract("crm-1", "acme", "renewed", 24000, 26000, "2026-02-01")
    churn = contract("crm-2", "acme", "churned", 26000, None, "2026-03-01", note="lost to a competitor")
    other = contract("crm-3", "globex", "expanded", 10000, 15000, "2026-02-15")
    r = await api.post(
        "/v1/events", json=[renewal, churn, track("acme", "login", T0 - timedelta(hours=2), "ada", "t1")], headers=auth(keys["ingest"])
    )
    assert r.status_code == 202 and r.json() == {"accepted": 3, "rejected": []}, r.text
    # The same outcomes again over Kafka (a CRM retrying), and one more.
    publish(topics, [renewal, churn, other])
    worker = IngestWorker(topics, session_factory, clock)
    try:
        # Every one of the six records handled (the duplicates too): the group committed them all.
        drain(worker, lambda: sum(committed_offsets(topics, worker.group_id, topics.topic_events).values()) == 6)
    finally:
        worker.close()
    assert outcomes(session_factory) == [
        ("crm-1", "acme", "renewed", 26000.0, "event"),
        ("crm-2", "acme", "churned", 0.0, "event"),
        ("crm-3", "globex", "expanded", 15000.0, "event"),
    ]
    ops = auth(keys["ops"])
    acme = (await api.get("/v1/accounts/acme", headers=ops)).json()
    assert (acme["contract_state"], acme["contract_state_since"]) == ("churned", "2026-03-01")
    globex = (await api.get("/v1/accounts/globex", headers=ops)).json()
    assert (globex["contract_state"], globex["contract_state_since"]) == ("active", "2026-02-15")
    listed = (await api.get("/v1/accounts/acme/contract-outcomes", headers=auth(keys["csm"]))).json()
    assert [(o["event_id"], o["kind"], o["arr_before"], o["arr_after"], o["effective_date"], o["note"]) for o in listed["items"]] == [
        ("crm-2", "churned", 26000.0, 0.0, "2026-03-01", "lost to a competitor"),
        ("crm-1", "renewed", 24000.0, 26000.0, "2026-02-01", None),
    ]
    # A usage event does not make an account's contract state.
    r = await api.put("/v1/accounts/initech", json={"name": "Initech"}, headers=ops)
    assert r.json()["contract_state"] is None


async def test_bad_contract_events_are_refused_with_the_path(api, topics, keys, session_factory, clock):
    bad = [
        contract("b1", "acme", "cancelled", 100, 0, "2026-03-01"),
        contract("b2", "acme", "expanded", 100, 80, "2026-03-01"),
        contract("b3", "acme", "renewed", 100, None, "2026-03-01"),
        contract("b4", "acme", "churned", 100, 50, "not-a-date"),
        {**contract("b5", "acme", "renewed", 100, 100, "2026-03-01"), "traits": {"kind": "renewed"}},
    ]
    r = await api.post("/v1/events", json=bad, headers=auth(keys["ingest"]))
    assert r.status_code == 422
    details = {e["event_id"]: (e["reason"], e["detail"]) for e in r.json()["detail"]["rejected"]}
    assert details["b1"][0] == "invalid_field" and "properties.kind" in details["b1"][1] and "'renewed', 'churned'" in details["b1"][1]
    assert "properties.arr_after: an expansion ends above arr_before" in details["b2"][1]
    assert "properties.arr_after: required for a renewed contract" in details["b3"][1]
    assert "properties.arr_after: a churned contract ends at 0" in details["b4"][1] and "properties.effective_date" in details["b4"][1]
    assert "contract events carry the outcome in 'properties'" in details["b5"][1]
    # On Kafka the same record goes to the DLQ with the same reason, and nothing is stored.
    publish(topics, [bad[1], contract("ok", "acme", "renewed", 100, 100, "2026-03-01")])
    worker = IngestWorker(topics, session_factory, clock)
    try:
        drain(worker, lambda: raw_count(session_factory) == 1)
    finally:
        worker.close()
    dlq = read_dlq(topics, 1)
    assert dlq[0]["reason"] == "invalid_field" and "properties.arr_after: an expansion ends above arr_before" in dlq[0]["detail"]
    assert [o[0] for o in outcomes(session_factory)] == ["ok"]


def housekeeping(topics, session_factory, clock) -> None:
    """One poll of an ingest worker: its hourly housekeeping brings due outcomes into effect."""
    worker = IngestWorker(topics, session_factory, clock)
    try:
        worker.poll_once(0)
    finally:
        worker.close()


async def test_cs_ops_record_contract_outcomes_over_the_api(api, topics, keys, session_factory, clock):
    ops = auth(keys["ops"])
    assert (await api.put("/v1/accounts/acme", json={"name": "Acme", "arr": 24000}, headers=ops)).status_code == 200
    missing = await api.post(
        "/v1/accounts/nobody/contract-outcomes", json={"kind": "churned", "arr_before": 1, "effective_date": "2026-03-01"}, headers=ops
    )
    assert missing.status_code == 404
    bad = await api.post(
        "/v1/accounts/acme/contract-outcomes",
        json={"kind": "contracted", "arr_before": 100, "arr_after": 0, "effective_date": "2026-13-01", "x": 1},
        headers=ops,
    )
    assert bad.status_code == 422
    locs = {tuple(e["loc"]): e["msg"] for e in bad.json()["detail"]}
    assert set(locs) == {("body", "arr_after"), ("body", "effective_date"), ("body", "x")}, locs
    assert "to 0 is 'churned'" in locs[("body", "arr_after")]

    first = await api.post(
        "/v1/accounts/acme/contract-outcomes",
        json={"event_id": "opp-7", "kind": "churned", "arr_before": 24000, "effective_date": "2026-03-31", "note": "budget cut"},
        headers=ops,
    )
    assert first.status_code == 201, first.text
    assert first.json() | {"occurred_at": None, "received_at": None} == {
        "event_id": "opp-7",
        "account_id": "acme",
        "kind": "churned",
        "arr_before": 24000.0,
        "arr_after": 0.0,
        "effective_date": "2026-03-31",
        "note": "budget cut",
        "source": "api",
        "recorded_by": "ops:test ops",
        "occurred_at": None,
        "received_at": None,
    }
    again = await api.post(
        "/v1/accounts/acme/contract-outcomes",
        json={"event_id": "opp-7", "kind": "renewed", "arr_before": 24000, "arr_after": 24000, "effective_date": "2026-03-31"},
        headers=ops,
    )
    assert again.status_code == 200 and again.json()["kind"] == "churned"  # a retry stores nothing new

    async def state() -> tuple[str | None, str | None]:
        acme = (await api.get("/v1/accounts/acme", headers=ops)).json()
        return acme["contract_state"], acme["contract_state_since"]

    # Dated 2026-03-31, recorded on 2026-03-02: the account is not churned before its date.
    assert await state() == (None, None)
    housekeeping(topics, session_factory, clock)
    assert await state() == (None, None)
    clock.set(datetime(2026, 3, 31, 0, 30, tzinfo=UTC))
    housekeeping(topics, session_factory, clock)
    assert await state() == ("churned", "2026-03-31")
    # A later win-back makes the account active again, on its date; an older one does not change it.
    for i, (kind, day) in enumerate([("renewed", "2026-01-31"), ("expanded", "2026-06-01"), ("renewed", "2025-12-31")]):
        body = {"kind": kind, "arr_before": 1000, "arr_after": 2000, "effective_date": day}
        r = await api.post("/v1/accounts/acme/contract-outcomes", json={**body, "event_id": f"w{i}"}, headers=ops)
        assert r.status_code == 201, r.text
    assert await state() == ("churned", "2026-03-31")
    clock.set(datetime(2026, 6, 1, 8, 0, tzinfo=UTC))
    housekeeping(topics, session_factory, clock)
    assert await state() == ("active", "2026-06-01")
    # Paged, newest effective date first.
    seen, cursor = [], None
    while True:
        page = (
            await api.get("/v1/accounts/acme/contract-outcomes", params={"limit": 2, **({"cursor": cursor} if cursor else {})}, headers=ops)
        ).json()
        seen += [o["event_id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["w1", "opp-7", "w0", "w2"]
    assert (await api.get("/v1/accounts/acme/contract-outcomes", params={"cursor": "bogus"}, headers=ops)).status_code == 422
    assert len(outcomes(session_factory)) == 4


async def test_the_console_account_page_shows_the_contract_outcomes(api, keys):
    ops = auth(keys["ops"])
    await api.put("/v1/accounts/acme", json={"name": "Acme"}, headers=ops)
    await sign_in(api, keys["csm"])
    empty = (await api.get("/console/accounts/acme")).text
    assert "No contract outcome recorded" in empty and '<dd id="contract-state">—</dd>' in empty
    for body in (
        {"kind": "renewed", "arr_before": 1000, "arr_after": 1200, "effective_date": "2026-01-15"},
        {"kind": "churned", "arr_before": 1200, "effective_date": "2026-02-28", "note": "<script>x</script>"},
    ):
        assert (await api.post("/v1/accounts/acme/contract-outcomes", json=body, headers=ops)).status_code == 201
    html = (await api.get("/console/accounts/acme")).text
    rows = re.findall(r"<tr><td>([^<]*)</td><td>(\w+)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td></tr>", html)
    assert [(r[1], r[3], r[4], r[5]) for r in rows] == [
        ("churned", "0", "ops:test ops", "&lt;script&gt;x&lt;/script&gt;"),
        ("renewed", "1,200", "ops:test ops", ""),
    ]
    assert re.search(r'<dd id="contract-state">churned <small class="muted">since [^<]*</small></dd>', html)
