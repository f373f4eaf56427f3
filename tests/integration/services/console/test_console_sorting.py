"""Sorting and paging the console's lists (issue 23, item 2), both databases, on the
seeded world: the enrolments list filtered by playbook, state and account; every list
sorted by each of its columns, either way, walked page by page over *Next*, shows every
row it counts exactly once, in the column's order (NULLs last, ties by id the same way),
and the sorted heading says so (aria-sort)."""

from __future__ import annotations

import re
from html import unescape

from sqlalchemy import select

from services.outreach.models import Enrollment, Message
from services.rules.models import SignalRecord
from tests.support.console import sign_in

COUNT = re.compile(r'<span id="count">([\d,]+)</span>')
NEXT = re.compile(r'<a href="([^"]+)" id="(?:next|older)" rel="next">')


def expected(rows: list, attr: str, desc: bool, key: str = "id") -> list[str]:
    """The ids in ``attr``'s order (NULLs last either way), ties by ``key`` the same way."""
    values = [r for r in rows if getattr(r, attr) is not None]
    nulls = [r for r in rows if getattr(r, attr) is None]
    values.sort(key=lambda r: (getattr(r, attr), getattr(r, key)), reverse=desc)
    nulls.sort(key=lambda r: getattr(r, key), reverse=desc)
    return [getattr(r, key) for r in values + nulls]


async def walk_pages(api, path: str, row: re.Pattern[str]) -> tuple[int, list[str], int, str]:
    """The count the list states, every row id over its pages (following Next), how many
    pages, and the first page's HTML."""
    first = (await api.get(path)).text
    m = COUNT.search(first)
    assert m, first[-2000:]
    count = int(m.group(1).replace(",", ""))
    ids, html, pages = [], first, 1
    while True:
        ids += [unescape(i) for i in row.findall(html)]
        more = NEXT.search(html)
        if not more:
            return count, ids, pages, first
        html = (await api.get(unescape(more.group(1)))).text
        pages += 1


ENROLMENT_ROW = re.compile(r'<tr data-enrolment="([^"]+)">')
ENROLMENT_COLUMNS = {
    "enrolled": "enrolled_at",
    "playbook": "playbook_id",
    "account": "account_id",
    "status": "status",
    "step": "step_index",
    "holdout": "holdout",
    "ended": "ended_at",
}


async def test_the_enrolments_list_sorts_by_every_column_and_pages_through_each_row_once(api, keys, session_factory):
    with session_factory() as s:
        everything = list(s.scalars(select(Enrollment)))
    assert len(everything) > 8, len(everything)  # several pages of 4, or paging is not tested
    assert any(e.ended_at is None for e in everything) and any(e.ended_at is not None for e in everything)  # NULLs to order
    await sign_in(api, keys["ops"])
    count, ids, pages, html = await walk_pages(api, "/console/enrolments?limit=4", ENROLMENT_ROW)
    assert count == len(everything) and pages == -(-count // 4)
    assert ids == expected(everything, "enrolled_at", True)  # default: newest first
    assert 'aria-sort="descending"><a class="sort" data-sort="enrolled"' in html
    for sort, attr in ENROLMENT_COLUMNS.items():
        for direction in ("asc", "desc"):
            count, ids, _pages, html = await walk_pages(api, f"/console/enrolments?sort={sort}&dir={direction}&limit=4", ENROLMENT_ROW)
            assert len(ids) == len(set(ids)) == count == len(everything), (sort, direction)
            assert ids == expected(everything, attr, direction == "desc"), (sort, direction)
            label = "ascending" if direction == "asc" else "descending"
            assert html.count("aria-sort=") == 1 and f'aria-sort="{label}"><a class="sort" data-sort="{sort}"' in html


async def test_the_enrolments_list_filters_and_links_each_row(api, keys, session_factory):
    with session_factory() as s:
        everything = list(s.scalars(select(Enrollment)))
    await sign_in(api, keys["ops"])
    e0 = everything[len(everything) // 2]
    for query, keep in (
        (f"playbook_id={e0.playbook_id}", lambda e: e.playbook_id == e0.playbook_id),
        (f"status={e0.status}", lambda e: e.status == e0.status),
        (f"account_id={e0.account_id}", lambda e: e.account_id == e0.account_id),
        (
            f"playbook_id={e0.playbook_id}&status={e0.status}&sort=account",
            lambda e: e.playbook_id == e0.playbook_id and e.status == e0.status,
        ),
    ):
        want = [e for e in everything if keep(e)]
        count, ids, _pages, _html = await walk_pages(api, f"/console/enrolments?{query}&limit=3", ENROLMENT_ROW)
        assert count == len(want) and sorted(ids) == sorted(e.id for e in want), query
    page = (await api.get(f"/console/enrolments?account_id={e0.account_id}")).text
    row = page.split(f'data-enrolment="{e0.id}"', 1)[1].split("</tr>", 1)[0]
    assert f'href="/console/accounts/{e0.account_id}"' in row and f'href="/console/playbooks/{e0.playbook_id}"' in row
    # The playbooks list's enrolment figure is the count of the list it links to.
    listing = (await api.get("/console/playbooks")).text
    for figure, href in re.findall(r'<a data-count="(\d+)" href="(/console/enrolments\?[^"]+)"', listing):
        assert COUNT.search((await api.get(unescape(href))).text).group(1).replace(",", "") == figure, href
    assert (await api.get("/console/enrolments?status=nope")).status_code == 422
    assert (await api.get("/console/enrolments?dir=up")).status_code == 422
    assert (await api.get("/console/enrolments?after=unknown")).status_code == 200  # a stale cursor is page one
    api.cookies.clear()
    await sign_in(api, keys["csm"])
    assert (await api.get("/console/enrolments")).status_code == 403


LISTS = {
    # path: (row pattern, model, its key, {sort: attribute}, default sort)
    "/console/signals": (
        re.compile(r'<tr data-signal="([^"]+)">'),
        SignalRecord,
        "signal_id",
        {"fired": "fired_at", "account": "account_id", "rule": "rule_id", "kind": "kind"},
        "fired",
    ),
    "/console/messages": (
        re.compile(r'<tr data-message="([^"]+)">'),
        Message,
        "id",
        {
            "created": "created_at",
            "channel": "channel",
            "state": "state",
            "account": "account_id",
            "recipient": "recipient",
            "subject": "subject",
            "playbook": "playbook_id",
        },
        "created",
    ),
}


async def test_signals_and_messages_sort_by_every_column_and_page_through_each_row_once(api, keys, session_factory):
    await sign_in(api, keys["ops"])
    for path, (row, model, key, columns, default) in LISTS.items():
        with session_factory() as s:
            everything = list(s.scalars(select(model)))
        limit = max(3, len(everything) // 4)  # about five pages
        assert len(everything) > 2 * limit, (path, len(everything))
        count, ids, _pages, html = await walk_pages(api, f"{path}?limit={limit}", row)
        assert count == len(everything) and ids == expected(everything, columns[default], True, key), path
        assert f'aria-sort="descending"><a class="sort" data-sort="{default}"' in html
        for sort, attr in columns.items():
            for direction in ("asc", "desc"):
                count, ids, _pages, html = await walk_pages(api, f"{path}?sort={sort}&dir={direction}&limit={limit}", row)
                assert len(ids) == len(set(ids)) == count == len(everything), (path, sort, direction)
                assert ids == expected(everything, attr, direction == "desc", key), (path, sort, direction)
                label = "ascending" if direction == "asc" else "descending"
                assert html.count("aria-sort=") == 1 and f'aria-sort="{label}"><a class="sort" data-sort="{sort}"' in html
        # A filter is kept under a sort, and the count with it.
        first = everything[0]
        count, ids, _pages, _html = await walk_pages(
            api,
            f"{path}?account_id={first.account_id}&sort=kind&dir=desc&limit=2"
            if path.endswith("signals")
            else f"{path}?account_id={first.account_id}&sort=state&limit=2",
            row,
        )
        assert count == len(ids) and sorted(ids) == sorted(getattr(r, key) for r in everything if r.account_id == first.account_id), path


ENGAGEMENT_ROW = re.compile(r'<tr data-engagement="([^"]+)"')
ENGAGEMENT_COLUMNS = {
    "account": "account_id",
    "goal": "goal",
    "status": "status",
    "csm": "csm_id",
    "priority": "priority",
    "due_at": "due_at",
    "outcome": "outcome",
    "opened": "opened_at",
}


async def test_engagements_sort_by_every_column_and_page_through_each_row_once(api, keys, session_factory):
    """50 a page: the seeded world has fewer, so each walk adds a filter-free check of
    the one page and the order; the paging itself is test_console_find's (every page)."""
    from services.outreach.models import Engagement

    with session_factory() as s:
        everything = list(s.scalars(select(Engagement)))
    assert any(e.due_at is None for e in everything) or any(e.outcome is None for e in everything)  # NULLs to order
    await sign_in(api, keys["ops"])
    for sort, attr in ENGAGEMENT_COLUMNS.items():
        for direction in ("asc", "desc"):
            count, ids, _pages, html = await walk_pages(api, f"/console/engagements?sort={sort}&dir={direction}", ENGAGEMENT_ROW)
            assert len(ids) == len(set(ids)) == count == len(everything), (sort, direction)
            assert ids == expected(everything, attr, direction == "desc"), (sort, direction)
            label = "ascending" if direction == "asc" else "descending"
            assert html.count("aria-sort=") == 1 and f'aria-sort="{label}"><a class="sort" data-sort="{sort}"' in html
    assert (await api.get("/console/engagements?sort=nope")).status_code == 200  # an unknown column: the default order


ACCOUNT_ROW = re.compile(r'<tr data-account="([^"]+)"')
ACCOUNT_COLUMNS = {
    "name": "name",
    "segment": "segment",
    "plan": "plan",
    "lifecycle": "lifecycle_stage",
    "arr": "arr",
    "seats": "seats",
    "renewal": "renewal_date",
    "last_seen": "last_seen_at",
}


async def test_accounts_sort_by_every_column_and_page_through_each_account_once(api, keys, session_factory):
    """Every column either way, over every page (50 a page, offset paging: the seeded world
    fits on one, so this checks the order; the order is total, ties by id ascending as the
    list always had, so offset pages cannot repeat or skip), each account once, NULLs last."""
    from services.ingest.models import Account

    with session_factory() as s:
        everything = list(s.scalars(select(Account)))
    assert any(r.renewal_date is None for r in everything) or any(r.arr is None for r in everything) or len(everything) > 10
    await sign_in(api, keys["ops"])

    async def walk_accounts(query: str) -> tuple[list[str], str]:
        ids, page, first = [], 1, ""
        while True:
            html = (await api.get(f"/console/accounts?{query}&page={page}")).text
            first = first or html
            ids += [unescape(i) for i in ACCOUNT_ROW.findall(html)]
            if 'rel="next"' not in html:
                return ids, first
            page += 1

    for sort, attr in ACCOUNT_COLUMNS.items():
        for desc in (False, True):
            ids, html = await walk_accounts(f"sort={sort}" + ("&desc=1" if desc else ""))
            assert len(ids) == len(set(ids)) == len(everything), (sort, desc)
            values = sorted((r for r in everything if getattr(r, attr) is not None), key=lambda r: r.id)
            values.sort(key=lambda r: getattr(r, attr), reverse=desc)
            nulls = sorted(r.id for r in everything if getattr(r, attr) is None)
            assert ids == [r.id for r in values] + nulls, (sort, desc)
            assert html.count("aria-sort=") == 1 and f'aria-sort="{"descending" if desc else "ascending"}"' in html
