"""Every figure is the count of its list (issue 19, deliverable 2): the checks that a
console page's, a report endpoint's and the pool's figures equal the counts of the lists
they summarise, on whatever world the caller built (the console's seeded world, the
engagement tests' known world, the README tour's demo)."""

from __future__ import annotations

import re
from html import unescape

from tests.support.helpers import walk


async def console_figures_are_counts_of_lists(api, playbooks: list[str]) -> int:
    """Each figure on the overview and the playbook pages (marked data-count) links to a
    list, and that list says it holds exactly that many (id="count"). ``api`` is signed in
    to the console as CS Ops. Returns how many figures were followed."""
    checked = 0
    for page_url in ["/console/", "/console/playbooks", *(f"/console/playbooks/{p}" for p in playbooks)]:
        page = await api.get(page_url)
        assert page.status_code == 200, page_url
        figures = re.findall(r'data-count="(\d+)" href="([^"]+)"', page.text)
        assert figures, page_url
        for n, href in figures:
            target = await api.get(unescape(href))
            assert target.status_code == 200, href
            shown = re.search(r'id="count">([\d,]+)[< ]', target.text)
            assert shown and int(shown.group(1).replace(",", "")) == int(n), (page_url, href, n, shown and shown.group(1))
            checked += 1
    return checked


async def arr_at_risk_is_sum_of_list(api) -> tuple[float, int]:
    """Issue 21, item 6: the overview's "ARR at risk" is the sum of the ARR of the accounts
    list it links to (every page of it), and every account on that list is labelled at
    risk. ``api`` is signed in to the console as CS Ops. Returns (the figure, accounts)."""
    page = await api.get("/console/")
    assert page.status_code == 200
    m = re.search(r'id="arr-at-risk" data-sum="([\d.]+)" href="([^"]+)"', page.text)
    assert m, "the overview shows no ARR at risk"
    figure, href = float(m.group(1)), unescape(m.group(2))
    total, rows, listed = 0.0, 0, None
    while href:
        target = await api.get(href)
        assert target.status_code == 200, href
        if listed is None:
            shown = re.search(r'id="count">([\d,]+)[< ]', target.text)
            assert shown, href
            listed = int(shown.group(1).replace(",", ""))
        for arr, label in re.findall(
            r'<tr data-account="[^"]*" data-arr="([\d.]+)"(?: data-health="[^"]*" data-label="([^"]*)")?>', target.text
        ):
            assert label == "at_risk", (href, label)
            total += float(arr)
            rows += 1
        nxt = re.search(r'rel="next" href="([^"]+)"', target.text)
        href = unescape(nxt.group(1)) if nxt else ""
    assert rows == listed, (rows, listed)
    assert abs(total - figure) < 0.005, (figure, total)
    return figure, rows


async def playbook_reports_are_counts_of_lists(api, ops: dict) -> int:
    """Issue 19, deliverable 2, for the report endpoint: each figure of GET
    /v1/playbooks/{id}/report is the count of the list it summarises: enrolments (by
    status, treated and held out) and messages (by state, skipped by reason)."""
    reported = 0
    for playbook in await walk(api, "/v1/playbooks", ops):
        pid = playbook["id"]
        report = (await api.get(f"/v1/playbooks/{pid}/report", headers=ops)).json()
        enrolments = await walk(api, f"/v1/playbooks/{pid}/enrollments", ops)
        assert report["enrolled"] == len(enrolments)
        for status in ("active", "converted", "completed"):
            assert report[status] == len(await walk(api, f"/v1/playbooks/{pid}/enrollments?status={status}", ops)), (pid, status)
        for group, holdout in (("treated", False), ("holdout", True)):
            mine = [e for e in enrolments if e["holdout"] is holdout]
            assert report[group]["enrolled"] == len(mine), (pid, group)
            assert report[group]["converted"] == sum(1 for e in mine if e["status"] == "converted"), (pid, group)

        async def messages(state: str, pid: str = pid, **more: str) -> int:
            query = "&".join(f"{k}={v}" for k, v in {"playbook_id": pid, "state": state, **more}.items())
            return len(await walk(api, f"/v1/messages?{query}", ops))

        assert report["sent"] == await messages("sent")
        assert report["queued"] == await messages("queued") + await messages("sending")
        assert report["failed"] == await messages("failed") and report["uncertain"] == await messages("uncertain")
        for reason, n in report["skipped"].items():
            assert n == await messages("skipped", skip_reason=reason), (pid, reason)
        assert sum(report["skipped"].values()) == await messages("skipped")
        reported += report["enrolled"] + report["sent"]
    return reported


async def pool_figures_are_counts_of_lists(api, ops: dict) -> dict[str, int]:
    """Issue 19, deliverable 2, for the pool and its reports: every count GET /v1/pool,
    /v1/pool/outcomes and /v1/pool/forecast report equals the count of the list it
    summarises (GET /v1/engagements by status and CSM, GET /v1/csms). Returns the
    engagements listed per status."""
    listed = await walk(api, "/v1/engagements", ops)
    by_status = {s: await walk(api, f"/v1/engagements?status={s}", ops) for s in sorted({e["status"] for e in listed})}
    assert sum(map(len, by_status.values())) == len(listed)
    csms = await walk(api, "/v1/csms", ops)
    open_statuses = ("assigned", "active")

    pool = (await api.get("/v1/pool", headers=ops)).json()
    assert pool["by_status"] == {s: len(items) for s, items in by_status.items()}
    outcomes = sorted({e["outcome"] for e in listed if e["outcome"]})
    assert pool["by_outcome"] == {o: sum(1 for e in listed if e["outcome"] == o) for o in outcomes}
    assert pool["queue_length"] == len(by_status.get("queued", []))
    assert pool["open"] == sum(len(by_status.get(s, [])) for s in open_statuses)
    for row in pool["csms"]:
        theirs = [e for s in open_statuses for e in await walk(api, f"/v1/engagements?status={s}&csm_id={row['csm_id']}", ops)]
        assert row["open"] == len(theirs), row
    assert [c["csm_id"] for c in pool["csms"]] == [c["id"] for c in csms]
    assert pool["capacity"] == sum(c["capacity"] for c in csms if c["available"])

    report = (await api.get("/v1/pool/outcomes", headers=ops)).json()
    closed = [e for e in listed if e["closed_at"] and e["status"] in ("resolved", "expired", "held_out")]

    def group(rows) -> tuple[int, int]:
        return len(rows), sum(1 for e in rows if e["measured"].get("success"))

    engaged = [e for e in closed if e["status"] != "held_out"]
    held = [e for e in closed if e["status"] == "held_out"]
    assert (report["overall"]["engaged"]["n"], report["overall"]["engaged"]["recovered"]) == group(engaged)
    if held:
        assert (report["overall"]["held_out"]["n"], report["overall"]["held_out"]["recovered"]) == group(held)
    for row in report["by_csm"]:
        assert (row["engaged"]["n"], row["engaged"]["recovered"]) == group([e for e in engaged if e["csm_id"] == row["key"]])
    assert {r["key"] for r in report["by_csm"]} == {e["csm_id"] for e in closed if e["csm_id"]}
    assert report["disagreements"] == sorted(e["id"] for e in closed if e["measured"].get("csm_agrees") is False)

    forecast = (await api.get("/v1/pool/forecast", headers=ops)).json()
    assert forecast["open_now"] == sum(len(by_status.get(s, [])) for s in ("queued", *open_statuses))
    assert forecast["csms_available"] == sum(1 for c in csms if c["available"])
    assert forecast["pool_capacity"] == pool["capacity"]
    return {s: len(items) for s, items in by_status.items()}


async def segment_figures_are_counts_of_lists(api, ops: dict) -> int:
    """Issue 22, item 1: each segment's size on /console/segments (data-count) links to the
    segment's page, whose member count (id="count") is that figure, whose member list
    (every page of it, rel="next") holds that many rows, and which is the API's size and
    member list. ``api`` is signed in to the console as CS Ops; ``ops`` authorises the API.
    Returns how many figures were followed."""
    page = await api.get("/console/segments")
    assert page.status_code == 200
    figures = re.findall(r'data-count="(\d+)" href="([^"]+)"', page.text)
    checked = 0
    for n, href in figures:
        href = unescape(href).split("#")[0]
        segment_id = href.rsplit("/", 1)[1]
        members: list[str] = []
        shown = None
        while href:
            target = await api.get(href)
            assert target.status_code == 200, href
            if shown is None:
                m = re.search(r'id="count">([\d,]+)<', target.text)
                assert m, href
                shown = int(m.group(1).replace(",", ""))
            members += [unescape(a) for a in re.findall(r'<tr data-member="([^"]*)">', target.text)]
            nxt = re.search(r'rel="next" href="([^"]+)"', target.text)
            href = unescape(nxt.group(1)).split("#")[0] if nxt else ""
        listed = [m["account_id"] for m in await walk(api, f"/v1/segments/{segment_id}/members", ops)]
        size = (await api.get(f"/v1/segments/{segment_id}", headers=ops)).json()["size"]
        assert int(n) == shown == len(members) == len(listed) == size, (segment_id, n, shown, len(members), len(listed), size)
        assert members == listed, segment_id
        checked += 1
    return checked
