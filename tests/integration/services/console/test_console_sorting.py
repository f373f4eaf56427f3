"""Sorting and paging the console's lists (issue 23, item 2), both databases, on the
seeded world: the enrolments list filtered by playbook, state and account; every list
sorted by each of its columns, either way, walked page by page over *Next*, shows every
row it counts exactly once, in the column's order (NULLs last, ties by id the same way),
and the sorted heading says so (aria-sort)."""

from __future__ import annotations

import re
from html import unescape

from sqlalchemy import select

from services.outreach.models import Enrollment
from tests.support.console import sign_in

COUNT = re.compile(r'<span id="count">([\d,]+)</span>')
NEXT = re.compile(r'<a href="([^"]+)" id="next" rel="next">')


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
