"""The console's segment pages (issue 22, item 1; docs/segments.md) on both databases:
the list with each segment's size, the segment's page with its definition, its size
chart with its data table and its members in pages, every figure the count of the list
it links to (tests/support/counts.py) and the API's; names stay text; CS Ops only."""

from __future__ import annotations

from datetime import timedelta

from services.rules.evaluation.segments import run_segments
from tests.support.console import sign_in
from tests.support.counts import segment_figures_are_counts_of_lists
from tests.support.helpers import auth
from tests.support.rules import group, ingest

XSS = "<script>window.__pwned = 1</script>"


async def test_segment_pages_show_sizes_definition_chart_and_members(api, keys, session_factory, settings, clock):
    ops = auth(keys["ops"])
    now = clock.now()
    # 130 accounts: acct-000, acct-003 ... acct-129 retail (44), the other 86 fintech.
    ingest(
        session_factory,
        [group(f"acct-{i:03d}", now - timedelta(days=10), industry="retail" if i % 3 == 0 else "fintech") for i in range(130)],
        now,
    )
    fintech = {"id": "fintech", "name": f"Fintech {XSS}", "condition": {"field": "account.traits.industry", "op": "==", "value": "fintech"}}
    retail = {"id": "retail", "name": "Retail", "condition": {"field": "account.traits.industry", "op": "==", "value": "retail"}}
    empty = {"id": "nobody", "name": "Nobody", "condition": {"field": "account.traits.industry", "op": "==", "value": "mining"}}
    for body in (fintech, retail, empty):
        assert (await api.post("/v1/segments", json=body, headers=ops)).status_code == 201
    run_segments(session_factory, settings, now)
    # The next day three retail accounts turn fintech (89 and 41): the chart has two days.
    clock.advance(timedelta(days=1))
    ingest(session_factory, [group(f"acct-{i:03d}", clock.now(), industry="fintech") for i in (0, 3, 6)], clock.now())
    run_segments(session_factory, settings, clock.now())

    await sign_in(api, keys["csm"])
    assert (await api.get("/console/segments")).status_code == 403
    api.cookies.clear()
    await sign_in(api, keys["ops"])
    page = await api.get("/console/segments")
    assert page.status_code == 200
    assert XSS not in page.text and "Fintech &lt;script&gt;" in page.text
    assert 'data-count="89" href="/console/segments/fintech#members"' in page.text
    assert 'data-count="41" href="/console/segments/retail#members"' in page.text
    assert await segment_figures_are_counts_of_lists(api, ops) == 3

    seg = await api.get("/console/segments/fintech")
    assert seg.status_code == 200 and XSS not in seg.text
    assert "account.traits.industry" in seg.text  # the definition
    assert "<svg" in seg.text and "Size of Fintech" in seg.text
    # The chart's data table: one row per measured day, the sizes the API lists.
    sizes = (await api.get("/v1/segments/fintech/sizes?days=7", headers=ops)).json()["items"]
    assert [(p["day"], p["size"]) for p in sizes] == [(now.date().isoformat(), 86), (clock.now().date().isoformat(), 89)]
    for p in sizes:
        assert f'<th scope="row">{p["day"]}</th><td>{p["size"]}</td>' in seg.text
    assert 'href="/console/accounts/acct-001"' in seg.text
    assert 'href="/console/signals?rule_id=segment%3Afintech"' in seg.text
    nobody = await api.get("/console/segments/nobody")
    assert 'id="count">0<' in nobody.text and "No member" in nobody.text
    assert (await api.get("/console/segments/missing")).status_code == 404
    # An account's page names its segments, linked for CS Ops.
    account = (await api.get("/console/accounts/acct-001")).text
    assert '<dd id="named-segments"><a href="/console/segments/fintech">fintech</a></dd>' in account
    account = (await api.get("/console/accounts/acct-009")).text
    assert '<dd id="named-segments"><a href="/console/segments/retail">retail</a></dd>' in account
    await api.delete("/v1/segments/retail", headers=ops)
    assert (await api.get("/console/segments/retail")).status_code == 404
    assert "/console/segments/retail" not in (await api.get("/console/segments")).text
    assert '<dd id="named-segments">—</dd>' in (await api.get("/console/accounts/acct-009")).text
