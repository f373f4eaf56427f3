"""The survey pages and the results API.

``/s/{token}`` is public, outside ``/v1``: the sealed token is the credential (whoever
holds the mail answers for its contact), so the comment form needs no CSRF token; every
value a page shows is escaped.

- ``GET /s/{token}?score=9``: the one-click answer from the mail. Records the score (a
  second answer replaces the first; the same one again writes nothing) and shows a
  thank-you page with a form for a comment.
- ``GET /s/{token}``: the form (score and comment); records nothing.
- ``POST /s/{token}`` (form: ``score``, ``comment``): records the score and comment.

A damaged or forged token is a 400 page and an expired one a 410 page; neither records
anything nor leads anywhere else.
"""

from __future__ import annotations

import html
from datetime import date, timedelta
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from services.outreach.links import tokens
from services.outreach.surveys import service
from services.outreach.surveys.links import LABELS, SCALES, question_for
from shared.api import NO_FRAMING, BodyDep, ClockDep, SessionDep, context_of, session_factory_of
from shared.auth import Principal, require
from shared.clock import Clock
from shared.db import transaction
from shared.errors import AUTH_ERRORS, NotFound, Unprocessable, responses

router = APIRouter()

MAX_FORM_BYTES = 16_384
_HTML = {"content": {"text/html": {"schema": {"type": "string"}}}}
_PAGES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the page", **_HTML},
    400: {"description": "the link is damaged or was not issued by us, or the score is not on the survey's scale", **_HTML},
    410: {"description": "the survey link has expired", **_HTML},
}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<meta name='viewport' content='width=device-width'></head><body style='font-family:sans-serif;"
        f"max-width:32rem;margin:3rem auto;padding:0 1rem'><main><h1>{html.escape(title)}</h1>{body}</main></body></html>",
        status_code=status,
        headers={**NO_FRAMING, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"},
    )


def _opened(request: Request, token: str) -> dict[str, Any] | HTMLResponse:
    ctx = context_of(request)
    opened = tokens.open_token(ctx.settings.secret, tokens.SURVEY, token, now=ctx.clock.now())
    if opened is None or opened.data.get("k") not in SCALES or not all(isinstance(opened.data.get(k), str) for k in "sau"):
        return _page("Link not valid", "<p>This survey link is damaged or was not issued by us.</p>", 400)
    if opened.expired:
        return _page("This survey has closed", "<p>Thank you all the same: this survey link has expired.</p>", 410)
    return opened.data


def _form(request: Request, data: dict[str, Any], score: int | None, comment: str = "", note: str = "") -> str:
    scale = data["k"]
    low, high = SCALES[scale]
    question = question_for(scale, None, context_of(request).settings)
    choices = "".join(
        f"<label style='display:inline-block;margin:.2rem'><input type='radio' name='score' value='{n}'"
        f"{' checked' if n == score else ''} required> {n}</label>"
        for n in range(low, high + 1)
    )
    lo, hi = LABELS[scale]
    return (
        f"{note}<form method='post'><fieldset style='border:0;padding:0;margin:0'><legend>{html.escape(question)}</legend>"
        f"<p>{choices}</p><p style='font-size:small;color:#555'>{low}: {html.escape(lo)} &middot; {high}: {html.escape(hi)}</p></fieldset>"
        f"<p><label>Anything you would like to tell us? (optional)<br><textarea name='comment' rows='5' "
        f"maxlength='{service.MAX_COMMENT}' style='width:100%'>{html.escape(comment)}</textarea></label></p>"
        f"<p><button type='submit'>Send</button></p></form>"
    )


def _record(request: Request, data: dict[str, Any], score: int, comment: str) -> None:
    ctx = context_of(request)
    with transaction(session_factory_of(request)) as session:
        service.record_answer(session, ctx.settings, service.Answer(data, score, comment), now=ctx.clock.now())


@router.get(
    "/s/{token}",
    response_class=HTMLResponse,
    tags=["public"],
    responses=_PAGES,
    summary="A survey's one-click score link (?score=) records the answer; without a score, the answer form",
)
def survey_page(request: Request, token: str, score: int | None = Query(None, ge=0, le=10)) -> HTMLResponse:
    data = _opened(request, token)
    if isinstance(data, HTMLResponse):
        return data
    if score is None:
        return _page("Your answer", _form(request, data, None))
    if not service.valid_score(data["k"], score):
        low, high = SCALES[data["k"]]
        return _page("Pick a score", _form(request, data, None, note=f"<p>Scores go from {low} to {high}.</p>"), 400)
    _record(request, data, score, "")
    thanks = f"<p>Thank you: we recorded <b>{score}</b>. You can change it or add a comment below.</p>"
    return _page("Thank you", _form(request, data, score, note=thanks))


@router.post(
    "/s/{token}",
    response_class=HTMLResponse,
    tags=["public"],
    responses={
        **_PAGES,
        413: {
            "description": "the form is larger than 16 KB (this page), or the body than TOUCHLINE_MAX_REQUEST_BYTES (JSON, before the route)",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}, **_HTML["content"]},
        },
    },
    summary="A survey's answer form: a score and an optional comment (replaces an earlier answer)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {"score": {"type": "integer"}, "comment": {"type": "string", "maxLength": service.MAX_COMMENT}},
                        "required": ["score"],
                    }
                }
            },
        }
    },
)
def survey_answer(request: Request, token: str, body: bytes = BodyDep) -> HTMLResponse:
    data = _opened(request, token)
    if isinstance(data, HTMLResponse):
        return data
    if len(body) > MAX_FORM_BYTES:
        return _page("Too long", "<p>That answer is too long: please shorten your comment.</p>", 413)
    try:
        form = parse_qs(body.decode("utf-8"), max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        form = {}
    comment = (form.get("comment") or [""])[0].replace("\x00", "")
    raw = (form.get("score") or [""])[0].strip()
    if not raw.isdigit() or not service.valid_score(data["k"], int(raw)):
        low, high = SCALES[data["k"]]
        return _page("Pick a score", _form(request, data, None, comment, f"<p>Pick a score from {low} to {high}.</p>"), 400)
    _record(request, data, int(raw), comment)
    return _page("Thank you", f"<p>Thank you: we recorded <b>{int(raw)}</b>{' and your comment' if comment.strip() else ''}.</p>")


class Tally(BaseModel):
    answered: int
    promoters: int | None = Field(None, description="NPS: answers of 9 or 10")
    passives: int | None = Field(None, description="NPS: answers of 7 or 8")
    detractors: int | None = Field(None, description="NPS: answers of 0 to 6")
    nps: float | None = Field(None, description="NPS: % promoters - % detractors")
    satisfied: int | None = Field(None, description="CSAT: answers of 4 or 5")
    csat: float | None = Field(None, description="CSAT: % satisfied")


class SurveyDay(Tally):
    day: str


class SurveySegment(Tally):
    segment: str


class SurveyResults(Tally):
    survey_id: str
    segment: str | None = Field(None, description="only the answers of accounts in this named segment now (?segment=)")
    scale: str = Field(description="nps (0-10) or csat (1-5)")
    start: str
    end: str
    scores: dict[str, int] = Field(description="answers per score")
    by_day: list[SurveyDay] = Field(description="by the UTC day of each contact's latest answer")
    by_segment: list[SurveySegment] = Field(description="by the named segments the answering accounts are in now")


@router.get(
    "/v1/surveys/{survey_id}/results",
    tags=["surveys"],
    response_model=SurveyResults,
    response_model_exclude_none=True,
    responses={**AUTH_ERRORS, **responses(NotFound, Unprocessable)},
    summary="A survey's results: NPS (promoters, passives, detractors) or CSAT, overall, by day and by segment; each contact's latest answer",
)
def survey_results(
    survey_id: str = Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_\-]*$"),
    start: date | None = Query(None, description="first UTC day (default: 90 days before end)"),
    end: date | None = Query(None, description="last UTC day (default: today)"),
    segment: str | None = Query(None, min_length=1, max_length=64, description="only accounts in this named segment now"),
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    _principal: Principal = require("ops", "csm"),
) -> Any:
    end = end or clock.now().date()
    try:
        start = start or end - timedelta(days=90)
    except OverflowError:
        raise Unprocessable("start: the default window reaches before year 1; give a start") from None
    if start > end:
        raise Unprocessable(f"start {start} is after end {end}")
    if (end - start).days > 3660:
        raise Unprocessable("at most ten years at once")
    out = service.results(session, survey_id, start=start, end=end, segment=segment)
    if out is None:
        raise NotFound(f"nobody has answered survey {survey_id!r}")
    return out
