"""The one search box (in every page's header): accounts by the start of their name or
id or by an email domain, contacts by the start of their name or email or by their
domain, each list counted and paged. The queries are ingest's
(``find_accounts``/``find_contacts``: indexed, set-based); a CSM and CS Ops see the same
results, as both see the accounts list and its pages."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from services.console.web import READER, Viewer, render
from services.ingest import interface as ingest
from shared.api import SessionDep

router = APIRouter()
PER_PAGE = 20


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
    accounts, accounts_total = ingest.find_accounts(session, text, offset=(accounts_page - 1) * PER_PAGE, limit=PER_PAGE)
    contacts, contacts_total = ingest.find_contacts(session, text, offset=(contacts_page - 1) * PER_PAGE, limit=PER_PAGE)
    return render(
        request,
        "search.html",
        search_q=text,
        accounts=accounts,
        accounts_total=accounts_total,
        accounts_page=accounts_page,
        accounts_pages=max(1, -(-accounts_total // PER_PAGE)),
        contacts=contacts,
        contacts_total=contacts_total,
        contacts_page=contacts_page,
        contacts_pages=max(1, -(-contacts_total // PER_PAGE)),
        names={a.id: a.name for a in ingest.accounts(session, {c.account_id for c in contacts}).values()},
    )
