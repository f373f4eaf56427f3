"""The console's one search box: accounts by name, id or email domain, contacts by name,
email or email domain. Set-based and indexed on both databases: every condition is a
prefix range (``key >= q and key < q + U+10FFFF``) or an equality on an expression index
of migration 0020 (``lower(name)``, ``lower(id)``, ``lower(email)`` and the email's
domain, in the "C" collation on PostgreSQL, so a range is a byte range and the index
answers it); no ``LIKE '%…%'`` scan. Names match from their start ("glob" finds "Globex
Corp", "corp" does not). SQLite's ``lower()`` folds ASCII letters only, so there a
non-ASCII capital matches only as typed.

Bounded (``at_most``): a text that matches most accounts or contacts ("bulk" at 100,000
accounts: 1.7 s p95 on a loaded machine) is counted only up to ``at_most``; past it
the total comes back as ``at_most + 1`` ("more than at_most") and the page is taken
from each condition's first rows by name (:func:`_first_by_name`), never from all
the matches. Under it the total is exact and the page is sorted from the matches."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func, literal, literal_column, or_, select, union, union_all
from sqlalchemy.orm import Session

from services.ingest.models import Account, User
from services.ingest.repository.accounts import _ACCOUNT_INFO, _CONTACT, _account, _contact
from services.ingest.snapshots import AccountInfo, Contact

TOP = "\U0010ffff"  # sorts after every character, in UTF-8 bytes as in code points


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _key(session: Session, column: Any) -> ColumnElement[str]:
    """``lower(column)`` as the index holds it."""
    expr: ColumnElement[str] = func.lower(column)
    return expr.collate("C") if _postgres(session) else expr


def domain_of(session: Session, column: Any) -> ColumnElement[str]:
    """The lowercased part of an address after its "@", as the index holds it."""
    # Literals, not bound parameters: a planner matches an expression index only against
    # the very expression it holds.
    at: ColumnElement[str] = literal_column("'@'")
    two: ColumnElement[int] = literal_column("2")
    one: ColumnElement[int] = literal_column("1")
    if _postgres(session):
        return func.lower(func.split_part(column, at, two)).collate("C")
    return func.lower(func.substr(column, func.instr(column, at) + one))


def _prefix(key: ColumnElement[str], q: str) -> ColumnElement[bool]:
    return (key >= q) & (key < q + TOP)


def _needle(text: str) -> str:
    return text.strip().lower()


def _first_by_name(session: Session, branches: list[Any], offset: int, limit: int) -> Any:
    """The page ``offset``/``limit`` (in the order of their columns: the name's key, then
    the ids) of the rows any of ``branches`` selects, when there are many: each branch's
    first ``offset + limit`` in that order (a range read in the name index's order, or the
    branch's own index and a top-N sort of its matches: the planner picks per branch, on
    one condition each), then their union sorted. The page's rows are among those: a row
    not among its branch's first ``offset + limit`` has that many before it."""
    first = offset + limit
    parts = [b.order_by(*b.selected_columns).limit(first).subquery() for b in branches]
    merged = union(*(select(*p.c) for p in parts)).subquery()
    return select(*merged.c).order_by(*merged.c).offset(offset).limit(limit)


def find_accounts(session: Session, text: str, *, offset: int, limit: int, at_most: int | None = None) -> tuple[list[AccountInfo], int]:
    """Accounts whose name or id starts with ``text``, or (``text`` a domain, or "@domain")
    with a contact or an owner at that email domain: a page by name, then id, and the
    count (with ``at_most``: at most ``at_most + 1``, meaning more than ``at_most``)."""
    q = _needle(text)
    if not q:
        return [], 0
    domain = q.removeprefix("@")
    by_contact = select(User.account_id).where(domain_of(session, User.email) == domain).distinct()
    conds = [
        _prefix(_key(session, Account.name), q),
        _prefix(_key(session, Account.id), q),
        Account.id.in_(by_contact),
        domain_of(session, Account.owner_email) == domain,
    ]
    branches = [select(Account.id).where(conds[0]), select(Account.id).where(conds[1]), by_contact, select(Account.id).where(conds[3])]
    order = (_key(session, Account.name), Account.id)
    if at_most is not None:
        # Each condition's matches up to at_most + 1 (four index range reads, bounded): if
        # one has more, so has their union; if none has, they are the union, whole.
        found: dict[int, list[str]] = {}
        bounded = [b.limit(at_most + 1).subquery() for b in branches]  # subqueries: SQLite has no (SELECT ... LIMIT) UNION
        tagged = union_all(*(select(b.c[0], literal(i).label("branch")) for i, b in enumerate(bounded)))
        for account_id, branch in session.execute(tagged):
            found.setdefault(branch, []).append(account_id)
        if any(len(ids) > at_most for ids in found.values()):
            page = _first_by_name(
                session, [select(_key(session, Account.name).label("k"), Account.id).where(c) for c in conds], offset, limit
            )
            keys = [r.id for r in session.execute(page)]
            if not keys:  # a page past them all
                return [], at_most + 1
            rows = session.execute(select(*_ACCOUNT_INFO).where(Account.id.in_(keys)).order_by(*order))
            return [_account(r) for r in rows], at_most + 1
        ids = sorted({a for some in found.values() for a in some})
        if not ids:
            return [], 0
        rows = session.execute(select(*_ACCOUNT_INFO).where(Account.id.in_(ids)).order_by(*order).offset(offset).limit(limit))
        return [_account(r) for r in rows], len(ids)
    # One set of ids from four index lookups (a UNION: an OR with a subquery in it would
    # make PostgreSQL scan the table), then the accounts by primary key.
    match = Account.id.in_(union(*branches))
    total = session.scalar(select(func.count()).select_from(Account).where(match)) or 0
    rows = session.execute(select(*_ACCOUNT_INFO).where(match).order_by(*order).offset(offset).limit(limit))
    return [_account(r) for r in rows], total


def find_contacts(session: Session, text: str, *, offset: int, limit: int, at_most: int | None = None) -> tuple[list[Contact], int]:
    """Contacts whose name or email starts with ``text``, or at the email domain ``text``
    ("@domain" too): a page by name, then account and id, and the count (with
    ``at_most``: at most ``at_most + 1``, meaning more than ``at_most``)."""
    q = _needle(text)
    if not q:
        return [], 0
    conds = [
        _prefix(_key(session, User.name), q),
        _prefix(_key(session, User.email), q),
        domain_of(session, User.email) == q.removeprefix("@"),
    ]
    match = or_(*conds)
    if at_most is not None:
        total = session.scalar(select(func.count()).select_from(select(User.id).where(match).limit(at_most + 1).subquery())) or 0
        if total > at_most:
            page = _first_by_name(
                session, [select(_key(session, User.name).label("k"), User.account_id, User.id).where(c) for c in conds], offset, limit
            )
            pairs = [(r.account_id, r.id) for r in session.execute(page)]
            if not pairs:  # a page past them all
                return [], total
            rows = session.execute(
                select(*_CONTACT)
                .where(or_(*((User.account_id == a) & (User.id == u) for a, u in pairs)))
                .order_by(_key(session, User.name), User.account_id, User.id)
            )
            return [_contact(r) for r in rows], total
    else:
        total = session.scalar(select(func.count()).select_from(User).where(match)) or 0
    # The matches first (a MATERIALIZED CTE: the three index lookups OR'ed), then their page
    # by name. Left to itself, PostgreSQL walked the name index in order from the first
    # name, filtering every contact until 20 matched: 0.25 s at 100,000 contacts for
    # "person 77" (77,258 rows removed by the filter; bench-console), 7 ms this way.
    matched = select(*_CONTACT, _key(session, User.name).label("sort_key")).where(match).cte("matched").prefix_with("MATERIALIZED")
    rows = session.execute(
        select(*(matched.c[c.key] for c in _CONTACT))
        .order_by(matched.c.sort_key, matched.c.account_id, matched.c.id)
        .offset(offset)
        .limit(limit)
    )
    return [_contact(r) for r in rows], total
