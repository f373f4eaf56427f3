"""The console's one search box: accounts by name, id or email domain, contacts by name,
email or email domain. Set-based and indexed on both databases: every condition is a
prefix range (``key >= q and key < q + U+10FFFF``) or an equality on an expression index
of migration 0020 (``lower(name)``, ``lower(id)``, ``lower(email)`` and the email's
domain, in the "C" collation on PostgreSQL, so a range is a byte range and the index
answers it); no ``LIKE '%…%'`` scan. Names match from their start ("glob" finds "Globex
Corp", "corp" does not). SQLite's ``lower()`` folds ASCII letters only, so there a
non-ASCII capital matches only as typed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func, literal_column, or_, select, union
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


def find_accounts(session: Session, text: str, *, offset: int, limit: int) -> tuple[list[AccountInfo], int]:
    """Accounts whose name or id starts with ``text``, or (``text`` a domain, or "@domain")
    with a contact or an owner at that email domain: a page by name, then id, and the count."""
    q = _needle(text)
    if not q:
        return [], 0
    domain = q.removeprefix("@")
    # One set of ids from four index lookups (a UNION: an OR with a subquery in it would
    # make PostgreSQL scan the table), then the accounts by primary key.
    ids = union(
        select(Account.id).where(_prefix(_key(session, Account.name), q)),
        select(Account.id).where(_prefix(_key(session, Account.id), q)),
        select(User.account_id).where(domain_of(session, User.email) == domain),
        select(Account.id).where(domain_of(session, Account.owner_email) == domain),
    )
    match = Account.id.in_(ids)
    total = session.scalar(select(func.count()).select_from(Account).where(match)) or 0
    rows = session.execute(
        select(*_ACCOUNT_INFO).where(match).order_by(_key(session, Account.name), Account.id).offset(offset).limit(limit)
    )
    return [_account(r) for r in rows], total


def find_contacts(session: Session, text: str, *, offset: int, limit: int) -> tuple[list[Contact], int]:
    """Contacts whose name or email starts with ``text``, or at the email domain ``text``
    ("@domain" too): a page by name, then account and id, and the count."""
    q = _needle(text)
    if not q:
        return [], 0
    match = or_(
        _prefix(_key(session, User.name), q),
        _prefix(_key(session, User.email), q),
        domain_of(session, User.email) == q.removeprefix("@"),
    )
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
