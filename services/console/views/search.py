"""The one search box (in every page's header): accounts by the start of their name or
id or by an email domain, contacts by the start of their name or email or by their
domain, each list counted and paged. The queries are ingest's
(``find_accounts``/``find_contacts``: indexed, set-based); a CSM and CS Ops see the same
results, as both see the accounts list and its pages. Each list is counted up to COUNTED
("more than 1,000" past it, paged through its first 1,000): a text that matches most of
100,000 accounts took 1.7 s to count and sort exactly; a search that broad is refined, not
paged to its end."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from services.console.web import READER, Viewer, render
from services.ingest import interface as ingest
from shared.api import SessionDep

router = APIRouter()
PER_PAGE = 20
COUNTED = 1000  # a multiple of PER_PAGE


@router.get("/search")
def search(
    request: Request,
    q: str = Query("", max_length=200),
    accounts_page: int = Query(1, ge=1, le=100_000),
    contacts_page: int = Query(1, ge=1, le=100_000),
    session: Session = SessionDep,
    viewer: Viewer = READER,
) -> HTMLResponse:
    text = q.strip()
    last = COUNTED // PER_PAGE  # past COUNTED matches, pages up to there
    accounts_page, contacts_page = min(accounts_page, last), min(contacts_page, last)
    accounts, accounts_total = ingest.find_accounts(session, text, offset=(accounts_page - 1) * PER_PAGE, limit=PER_PAGE, at_most=COUNTED)
    contacts, contacts_total = ingest.find_contacts(session, text, offset=(contacts_page - 1) * PER_PAGE, limit=PER_PAGE, at_most=COUNTED)
    return render(
        request,
        "search.html",
        search_q=text,
        counted=COUNTED,
        accounts=accounts,
        accounts_total=accounts_total,
        accounts_page=accounts_page,
        accounts_pages=min(last, max(1, -(-accounts_total // PER_PAGE))),
        contacts=contacts,
        contacts_total=contacts_total,
        contacts_page=contacts_page,
        contacts_pages=min(last, max(1, -(-contacts_total // PER_PAGE))),
        names={a.id: a.name for a in ingest.accounts(session, {c.account_id for c in contacts}).values()},
    )
