"""Finding things in the console (issue 23, item 2) on the seeded world, both databases:
the signals list pages through everything its count says, filtered by rule, kind,
account and a day range, each row linking to its evidence as the API records it."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from html import unescape
from urllib.parse import quote

from tests.support.console import sign_in
from tests.support.counts import console_figures_are_counts_of_lists
from tests.support.helpers import auth, walk
from tests.support.plans import plan_of, statements_of

ROW = re.compile(r'<tr data-signal="([^"]+)">')
OLDER = re.compile(r'<a href="([^"]+)" id="older" rel="next">')


async def pages_of(api, path: str) -> tuple[int, list[str], int]:
    """The count a list page states, every signal id over its pages (following Older), and how many pages."""
    first = (await api.get(path)).text
    count = int(re.search(r'<span id="count">([\d,]+)</span>', first).group(1).replace(",", ""))
    ids, html, pages = [], first, 1
    while True:
        ids += [unescape(i) for i in ROW.findall(html)]
        more = OLDER.search(html)
        if not more:
            return count, ids, pages
        html = (await api.get(unescape(more.group(1)))).text
        pages += 1


async def test_the_signals_list_pages_through_what_it_counts_newest_first(api, keys, seeded):
    h = auth(keys["ops"])
    everything = await walk(api, "/v1/signals", h, limit=500)  # newest first, as the API orders them
    assert len(everything) > 6  # more than two pages of 3, or paging is not tested
    await sign_in(api, keys["ops"])
    assert len(ROW.findall((await api.get("/console/signals")).text)) == min(100, len(everything))  # 100 a page by default
    count, ids, pages = await pages_of(api, "/console/signals?limit=3")
    assert count == len(everything) and pages == -(-count // 3)
    assert ids == [s["signal_id"] for s in everything]  # each once, in the API's order, across the pages
    # Filters, each against the API's list with the same filter.
    s0 = everything[len(everything) // 2]
    day = datetime.fromisoformat(s0["fired_at"]).date()
    for query, api_query in (
        (f"rule_id={s0['rule_id']}", f"rule_id={s0['rule_id']}"),
        (f"kind={s0['kind']}", f"kind={s0['kind']}"),
        (f"account_id={s0['account_id']}", f"account_id={s0['account_id']}"),
        (f"since={day}&until={day}", f"since={day}T00:00:00Z&until={day + timedelta(days=1)}T00:00:00Z"),
    ):
        want = [s["signal_id"] for s in await walk(api, f"/v1/signals?{api_query}", h, limit=500)]
        count, ids, _pages = await pages_of(api, f"/console/signals?{query}&limit=2")
        assert want and count == len(want) and ids == want, query


async def test_each_signal_links_to_its_evidence(api, keys, seeded):
    h = auth(keys["ops"])
    newest = (await api.get("/v1/signals?limit=5", headers=h)).json()["items"]
    await sign_in(api, keys["ops"])
    page = (await api.get("/console/signals")).text
    for s in newest:
        assert f'href="/console/signals/{s["signal_id"]}"' in page
        detail = await api.get(f"/console/signals/{s['signal_id']}")
        assert detail.status_code == 200
        evidence = unescape(detail.text[detail.text.index('id="evidence"') :].split("</ul>")[0])
        assert s["evidence"] and all(f"<code>{k}</code> = " in evidence for k in s["evidence"])
        assert f'href="/console/accounts/{s["account_id"]}"' in detail.text and f"version {s['rule_version']}" in detail.text
    assert (await api.get("/console/signals/nope")).status_code == 404
    assert (await api.get(f"/console/signals?since={date(2020, 1, 1)}&until={date(2020, 1, 1)}")).text.count("No signal matches") == 1


async def _directory(api, h) -> tuple[list[dict], list[dict]]:
    """Every account and every contact, as the API lists them."""
    accounts = await walk(api, "/v1/accounts", h, limit=200)
    contacts = [u for a in accounts for u in await walk(api, f"/v1/accounts/{quote(a['id'], safe='')}/users", h, limit=200)]
    return accounts, contacts


def _found(html: str, attr: str) -> list[str]:
    return [unescape(x) for x in re.findall(rf'<tr data-{attr}="([^"]+)">', html)]


async def test_one_search_box_finds_accounts_and_contacts_by_name_id_email_and_domain(api, keys, seeded):
    h = auth(keys["ops"])
    accounts, contacts = await _directory(api, h)
    with_email = [u for u in contacts if u.get("email")]
    assert accounts and with_email
    someone = with_email[len(with_email) // 2]
    domain = someone["email"].split("@", 1)[1].lower()
    named = next(a for a in accounts if a.get("name") and len(a["name"]) >= 4)
    await sign_in(api, keys["csm"])  # a CSM searches too (both see accounts and their contacts)
    page = await api.get("/console/accounts")
    assert 'action="/console/search"' in page.text  # the box is in every page's header

    def starts(value, q):
        return (value or "").lower().startswith(q)

    for q in (named["name"][:4], named["id"], someone["email"][:5], domain, "@" + domain, (someone.get("name") or "x")[:3]):
        ql = q.lower()
        want_accounts = {
            a["id"]
            for a in accounts
            if starts(a.get("name"), ql)
            or starts(a["id"], ql)
            or (a.get("owner_email") or "").lower().split("@")[-1] == ql.removeprefix("@")
            or any(u["account_id"] == a["id"] and (u.get("email") or "").lower().split("@")[-1] == ql.removeprefix("@") for u in contacts)
        }
        want_contacts = {
            f"{u['account_id']}/{u['id']}"
            for u in contacts
            if starts(u.get("name"), ql)
            or starts(u.get("email"), ql)
            or (u.get("email") or "").lower().split("@")[-1] == ql.removeprefix("@")
        }
        got_accounts, got_contacts, page_no = [], [], 1
        while True:  # every page of both lists
            r = await api.get(f"/console/search?q={quote(q)}&accounts_page={page_no}&contacts_page={page_no}")
            assert r.status_code == 200
            got_accounts += _found(r.text, "account")
            got_contacts += _found(r.text, "contact")
            counts = (re.search(r'id="accounts-count">([\d,]+)<', r.text), re.search(r'id="contacts-count">([\d,]+)<', r.text))
            if 'id="accounts-next"' not in r.text and 'id="contacts-next"' not in r.text:
                break
            page_no += 1
        assert set(got_accounts) == want_accounts and len(got_accounts) == len(want_accounts), q
        assert set(got_contacts) == want_contacts and len(got_contacts) == len(want_contacts), q
        assert [int(c.group(1).replace(",", "")) for c in counts] == [len(want_accounts), len(want_contacts)], q
    assert named["id"] in _found((await api.get(f"/console/search?q={quote(named['name'][:4].upper())}")).text, "account")  # any case
    empty = (await api.get("/console/search?q=%20")).text
    assert "No account matches" not in empty and "Type the start" in empty


async def test_search_reads_its_indexes_not_the_tables(console_world, seeded):
    """The planner can answer every condition from an index of migration 0020 (a table
    scan switched off where the planner allows: with it on, a planner may scan 20 rows)."""
    from services.ingest import interface as ingest

    def calls() -> None:
        with console_world.session_factory() as s:
            ingest.find_accounts(s, "acct", offset=0, limit=20)
            ingest.find_contacts(s, "example.com", offset=0, limit=20)

    engine = console_world.engine
    statements = [(sql, params) for sql, params in statements_of(engine, calls) if sql.lstrip().upper().startswith(("SELECT", "WITH"))]
    assert len(statements) == 4  # a count and a page, each
    postgres = console_world.kind == "postgresql"
    plans = [plan_of(engine, sql, params) for sql, params in statements]
    for plan in plans:
        assert "Seq Scan" not in plan and "SCAN accounts" not in plan and "SCAN users" not in plan, plan
    # The contacts' page gathers the matches through the three indexes at once, then sorts
    # that handful (issue 23, item 6). The plan it replaced (walking the name index in
    # order, filtering every contact before the first match: 0.25 s at 100,000) appears
    # only at that size: bench-console shows it, not this world of 100 accounts, where
    # the old query passes this line too (checked by hand).
    assert ("BitmapOr" if postgres else "MULTI-INDEX OR") in plans[3], plans[3]
    used = "\n".join(plans)
    for name in (
        "ix_accounts_name_search",
        "ix_accounts_id_search",
        "ix_users_name_search",
        "ix_users_email_search",
        "ix_users_email_domain",
    ):
        assert name in used, (name, used)


async def test_the_engagements_list_filters_pages_and_is_what_the_overview_counts(api, keys, seeded):
    """Every engagement, as the API lists them, over the list's pages; each filter against
    the API's list filtered the same way; the overview's open / due this week / overdue
    figures are the counts of the list they link to (tests/support/counts.py)."""
    h = auth(keys["ops"])
    everything = await walk(api, "/v1/engagements", h, limit=200)
    assert everything
    await sign_in(api, keys["ops"])

    async def listed(query: str) -> tuple[int, list[str]]:
        ids, page_no = [], 1
        while True:
            r = await api.get(f"/console/engagements?{query}&page={page_no}")
            assert r.status_code == 200, r.text
            count = int(re.search(r'<span id="count">([\d,]+)</span>', r.text).group(1).replace(",", ""))
            ids += re.findall(r'<tr data-engagement="([^"]+)"', r.text)
            if 'id="next"' not in r.text:
                return count, ids
            page_no += 1

    count, ids = await listed("")
    assert count == len(everything) and sorted(ids) == sorted(e["id"] for e in everything) and len(ids) == len(set(ids))
    some = everything[0]
    for query, keep in (
        ("status=open", lambda e: e["status"] in ("queued", "assigned", "active")),
        (f"status={some['status']}", lambda e: e["status"] == some["status"]),
        (f"goal={some['goal']}", lambda e: e["goal"] == some["goal"]),
        ("csm_id=csm-1", lambda e: e["csm_id"] == "csm-1"),
    ):
        want = sorted(e["id"] for e in everything if keep(e))
        count, ids = await listed(query)
        assert count == len(want) and sorted(ids) == want, query
    # Sorted by a column, over every page: the API's engagements in that order, ties by id.
    by_priority = [e["id"] for e in sorted(everything, key=lambda e: (-e["priority"], e["id"]))]
    assert (await listed("sort=priority"))[1] == by_priority
    by_opened = sorted(everything, key=lambda e: e["id"])
    by_opened.sort(key=lambda e: datetime.fromisoformat(e["opened_at"].replace("Z", "+00:00")), reverse=True)
    assert (await listed("sort=opened"))[1] == [e["id"] for e in by_opened]
    page = (await api.get("/console/engagements?sort=priority")).text
    assert 'aria-sort="descending"' in page and "highest priority first" in page
    overview = (await api.get("/console/")).text
    block = overview[overview.index('id="open-engagements"') - 200 :].split("</div>")[0]
    links = re.findall(r'data-count="(\d+)" href="([^"]+)"', block)
    assert len(links) == 3 and all("/console/engagements?" in unescape(href) for _n, href in links)
    for n, href in links:  # each figure is the count of the list it links to
        target = (await api.get(unescape(href))).text
        assert re.search(r'<span id="count">([\d,]+)</span>', target).group(1).replace(",", "") == n, href
    assert await console_figures_are_counts_of_lists(api, [p["id"] for p in await walk(api, "/v1/playbooks", h, limit=100)]) >= 3


async def test_the_messages_list_pages_and_each_message_reads_as_rendered_in_a_sandbox(api, keys, seeded):
    h = auth(keys["ops"])
    emails = await walk(api, "/v1/messages?channel=email", h, limit=500)
    assert len(emails) > 6
    await sign_in(api, keys["ops"])
    ids, html, pages = [], (await api.get("/console/messages?channel=email&limit=3")).text, 1
    count = int(re.search(r'<span id="count">([\d,]+)</span>', html).group(1).replace(",", ""))
    while True:
        ids += re.findall(r'<tr data-message="([^"]+)">', html)
        more = OLDER.search(html)
        if not more:
            break
        html, pages = (await api.get(unescape(more.group(1)))).text, pages + 1
    assert count == len(emails) and ids == [m["id"] for m in emails] and pages == -(-count // 3)
    with_html = next(m for m in emails if m["state"] != "skipped")
    page = await api.get(f"/console/messages/{with_html['id']}")
    assert page.status_code == 200
    frame = re.search(r'<iframe title="[^"]*" sandbox="" srcdoc="([^"]*)"></iframe>', page.text)
    assert frame and "<" not in frame.group(1)  # the email's HTML only inside the sandbox, escaped
    assert "style-src 'self' 'unsafe-inline'" in page.headers["content-security-policy"]
    assert "script-src 'self';" in page.headers["content-security-policy"]
    assert (await api.get("/console/messages/nope")).status_code == 404
    api.cookies.clear()
    await sign_in(api, keys["csm"])
    assert (await api.get(f"/console/messages/{with_html['id']}")).status_code == 403  # CS Ops data, as in the API


async def test_the_engagements_list_pages_in_its_index_order(console_world, seeded):
    """Issue 23, item 6: the engagements list's default order (open first by due date, the
    unscheduled last, then the closed; ties by opened_at newest first and id) is read from
    migration 0022's expression index, never sorted: at 100,000 engagements a deep page
    sorted the table (0.35 s of PostgreSQL for page 100; 14 ms from the index). Planted: the
    open statuses as bound parameters (as `in_` writes them) no longer match the index on
    SQLite, whose plan then scans and sorts (PostgreSQL's custom plan substitutes the
    values and still matches; a generic plan would not)."""
    from services.outreach import interface as outreach

    found: list[int] = []

    def calls() -> None:
        with console_world.session_factory() as s:
            found.append(outreach.find_engagements(s, offset=10, limit=5)[1])

    statements = statements_of(console_world.engine, calls)
    assert found[0] >= 1
    ((sql, params),) = [(q, p) for q, p in statements if "ORDER BY" in q]
    plan = plan_of(console_world.engine, sql, params, pg_off=("enable_seqscan", "enable_sort"))
    assert "ix_engagements_list_order" in plan, plan
    assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan


async def test_the_messages_list_pages_newest_first_from_an_index(console_world, seeded):
    """Issue 23, item 6: the messages list (newest first, 100 a page) reads migration 0023's
    index backwards instead of sorting every message (0.16 s at 200,000 messages on
    PostgreSQL; 0.08 ms from the index). Planted: without the index (dropped inside a
    transaction rolled back, PostgreSQL only) the plan sorts."""
    from services.outreach import interface as outreach

    def calls() -> None:
        with console_world.session_factory() as s:
            outreach.list_messages(s, state=None, account_id=None, playbook_id=None, channel=None, enrollment_id=None, limit=5, before=None)

    ((sql, params),) = [(q, p) for q, p in statements_of(console_world.engine, calls) if "ORDER BY" in q]

    def plan(drop: bool) -> str:
        before = ["DROP INDEX ix_messages_created"] if drop else []
        return plan_of(console_world.engine, sql, params, pg_off=("enable_seqscan", "enable_sort"), before=before)

    indexed = plan(drop=False)
    assert "ix_messages_created" in indexed and "Sort" not in indexed and "TEMP B-TREE" not in indexed, indexed
    if console_world.kind == "postgresql":  # transactional DDL: the drop is rolled back
        assert "Sort" in plan(drop=True)


async def test_the_engagements_list_by_opened_reads_an_index(console_world, seeded):
    """Issue 23, item 6: sorted by when opened (newest first, ties by id), the engagements
    list reads migration 0024's index instead of sorting every engagement (382 ms p95 at
    100,000 on a loaded machine). Planted: without the index (dropped in a transaction
    rolled back, PostgreSQL only) the plan sorts."""
    from services.outreach import interface as outreach

    def calls() -> None:
        with console_world.session_factory() as s:
            outreach.find_engagements(s, offset=5, limit=5, sort="opened")

    ((sql, params),) = [(q, p) for q, p in statements_of(console_world.engine, calls) if "ORDER BY" in q]

    def plan(drop: bool) -> str:
        before = ["DROP INDEX ix_engagements_opened"] if drop else []
        return plan_of(console_world.engine, sql, params, pg_off=("enable_seqscan", "enable_sort"), before=before)

    indexed = plan(drop=False)
    assert "ix_engagements_opened" in indexed and "Sort" not in indexed and "TEMP B-TREE" not in indexed, indexed
    if console_world.kind == "postgresql":  # transactional DDL: the drop is rolled back
        assert "Sort" in plan(drop=True)


async def test_the_grouped_counts_of_playbooks_pool_and_overview_read_only_an_index(console_world, seeded):
    """Issue 23, item 6: the playbook report and funnel (messages per state, skip reason
    and step), the overview's messages per channel, state and skip reason, and the pool's
    engagements per status and outcome, opened per playbook and their days open, each
    read one of migration 0025's covering indexes alone (40-65 ms each from the heap at
    100,000 engagements and 200,000 messages on PostgreSQL; 8-16 ms index-only).
    Planted: with ix_messages_playbook back at (playbook_id, state), the report's count
    was an Index Scan on PostgreSQL (heap reads for skip_reason) and this test failed.
    SQLite, without statistics on the seeded world, picks other indexes for some of
    them; there each index is checked to hold every column its counts read."""
    from services.outreach import interface as outreach

    now = console_world.now
    since = now - timedelta(days=90)

    def calls() -> None:
        with console_world.session_factory() as s:
            outreach.playbook_report(s, "win-back")
            outreach.playbook_funnel(s, "win-back")
            outreach.message_counts_by_state_reason(s, since)
            outreach.pool_report(s, now)
            outreach.pool_forecast(
                s, now, lookback_days=90, hours_per_engagement=6.0, reactive=0.15, collateral=0.1, overhead=0.15, time_box_days=30
            )

    statements = statements_of(console_world.engine, calls)

    def one(*needles: str) -> tuple[str, object]:
        (found,) = [(q, p) for q, p in statements if all(n in q for n in needles)]
        return found

    expected = {
        "ix_messages_playbook": [
            one("FROM messages", "GROUP BY messages.state, messages.skip_reason"),
            one("FROM messages", "GROUP BY messages.step_id"),
        ],
        "ix_messages_created": [one("FROM messages", "GROUP BY messages.channel")],
        "ix_engagements_status_outcome": [one("FROM engagements", "GROUP BY engagements.status, engagements.outcome")],
        "ix_engagements_opened_counts": [one("FROM engagements", "GROUP BY engagements.playbook_id"), one("FROM engagements", "sum(")],
    }
    with console_world.engine.connect() as conn:
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            conn.exec_driver_sql("SET enable_seqscan = off")  # a few seeded rows: let the planner show what it can do
            conn.exec_driver_sql("SET enable_bitmapscan = off")
        for index, found in expected.items():
            for sql, params in found:
                if postgres:
                    plan = "\n".join(str(r[0]) for r in conn.exec_driver_sql("EXPLAIN " + sql, params))
                    assert f"Index Only Scan using {index} " in plan, (index, sql, plan)
                else:
                    held = {r[2] for r in conn.exec_driver_sql(f"PRAGMA index_info({index})")}
                    table = "messages" if "FROM messages" in sql else "engagements"
                    read = {c for c in re.findall(table + r"\.(\w+)", sql)}
                    assert read and read <= held, (index, read - held)
        conn.rollback()


async def test_a_bounded_search_counts_to_its_bound_and_pages_as_the_exact_one(console_world, seeded):
    """Issue 23, item 6: with ``at_most``, a search counts up to it and says "more" past
    it (at_most + 1), and every page holds the very rows, in the very order, of the exact
    search's page, whichever way it was read (each condition's first rows by name merged
    when matches are many, the matches sorted otherwise). Planted: with each condition's first rows one short
    (offset + limit - 1), or the count's bound one short (at_most instead of at_most +
    1), this failed."""
    from services.ingest import interface as ingest

    with console_world.session_factory() as s:
        some = ingest.find_accounts(s, "acct", offset=0, limit=1)[0] or ingest.find_accounts(s, "a", offset=0, limit=1)[0]
        texts = ["acct", "a", "acct-00", (some[0].name or "x")[:3], "example.com", "@example.com", "u0", "zzz-none"]
        for text in texts:
            for find in (ingest.find_accounts, ingest.find_contacts):
                exact_all, exact_total = find(s, text, offset=0, limit=10_000)
                for at_most in (1, 5, exact_total, exact_total + 1, 10_000):
                    for offset in (0, 3, 6):
                        rows, total = find(s, text, offset=offset, limit=4, at_most=at_most)
                        assert total == (exact_total if exact_total <= at_most else at_most + 1), (find, text, at_most)
                        assert rows == exact_all[offset : offset + 4], (find, text, at_most, offset)
        assert ingest.find_accounts(s, "acct", offset=0, limit=4, at_most=5)[1] == 6  # the seeded world has more than 5


async def test_the_search_page_says_more_than_its_bound_and_pages_to_it(api, keys, seeded, monkeypatch):
    """Past COUNTED matches the search page says "more than" and offers the pages up to
    COUNTED (the bound made small here: 10 counted, 5 a page)."""
    from services.console.views import search as view

    monkeypatch.setattr(view, "COUNTED", 10)
    monkeypatch.setattr(view, "PER_PAGE", 5)
    await sign_in(api, keys["ops"])
    page = (await api.get("/console/search?q=acct&accounts_page=7")).text  # past the last page: the last
    assert re.search(r'id="accounts-count">more than 10<', page), page
    assert "page 2 of 2 (the first 10" in page and 'id="accounts-next"' not in page
    assert len(re.findall(r'<tr data-account="', page)) == 5


async def test_the_signals_list_by_rule_or_kind_reads_an_index(console_world, seeded):
    """Issue 23, item 6: sorted by rule or by kind (ties by id, either way), the signals
    list reads migration 0027's indexes instead of sorting every signal of a rule or kind
    (305 ms and 486 ms for the first page at 1,000,000 signals). Planted: without the
    index (dropped in a transaction rolled back, PostgreSQL only) the plan sorts."""
    from services.rules import interface as rules

    engine = console_world.engine
    for sort, index in (("rule", "ix_signals_rule_id"), ("kind", "ix_signals_kind_id")):
        for descending in (True, False):

            def call(sort: str = sort, descending: bool = descending) -> None:
                with console_world.session_factory() as s:
                    rules.find_signals(
                        s, kind=None, rule_id=None, account_id=None, since=None, until=None, sort=sort, descending=descending, limit=5
                    )

            ((sql, params),) = [(q, p) for q, p in statements_of(engine, call) if "ORDER BY" in q]

            def plan(drop: bool, sql: str = sql, params: object = params, index: str = index) -> str:
                before = [f"DROP INDEX {index}"] if drop else []
                return plan_of(engine, sql, params, pg_off=("enable_seqscan", "enable_sort"), before=before)

            indexed = plan(drop=False)
            assert index in indexed and "Sort" not in indexed and "TEMP B-TREE" not in indexed, (sort, descending, indexed)
            if console_world.kind == "postgresql":
                assert "Sort" in plan(drop=True), (sort, descending)
