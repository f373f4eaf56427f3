"""A survey's links in a message: one sealed token per recipient (purpose ``survey``,
:mod:`services.outreach.links.tokens`) naming the survey, its scale, the account, the
contact, the message and the playbook; each score link is the token and the score
(``/s/{token}?score=9``), the comment page the token alone. The token is the credential:
whoever holds the mail answers for its contact, and nothing in it is readable."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from services.outreach.links import tokens
from shared.settings import Settings

SCALES: dict[str, tuple[int, int]] = {"nps": (0, 10), "csat": (1, 5)}
QUESTIONS = {
    "nps": "How likely are you to recommend {product} to a friend or colleague?",
    "csat": "How satisfied are you with {product}?",
}
LABELS = {"nps": ("Not at all likely", "Extremely likely"), "csat": ("Very dissatisfied", "Very satisfied")}


def question_for(scale: str, question: str | None, settings: Settings) -> str:
    return question or QUESTIONS[scale].format(product=settings.product_name)


def survey_context(
    settings: Settings,
    *,
    now: datetime,
    survey_id: str,
    scale: str,
    question: str | None,
    account_id: str,
    user_id: str,
    message_id: str,
    playbook_id: str | None,
) -> dict[str, Any]:
    """What a survey's template renders as ``survey``: the question, each score's link,
    the comment page's link and the scale's labels."""
    data = {"s": survey_id, "k": scale, "a": account_id, "u": user_id, "m": message_id, "p": playbook_id}
    token = tokens.mint(
        settings.secret,
        tokens.SURVEY,
        {k: v for k, v in data.items() if v is not None},
        now=now,
        valid_for=timedelta(days=settings.link_token_days),
    )
    base = f"{settings.public_url}/s/{token}"
    low, high = SCALES[scale]
    return {
        "id": survey_id,
        "scale": scale,
        "question": question_for(scale, question, settings),
        "scores": [{"score": n, "url": f"{base}?score={n}"} for n in range(low, high + 1)],
        "comment_url": base,
        "low_label": LABELS[scale][0],
        "high_label": LABELS[scale][1],
    }


SAMPLE_SURVEY: dict[str, Any] = {
    "id": "nps-quarterly",
    "scale": "nps",
    "question": "How likely are you to recommend Touchline to a friend or colleague?",
    "scores": [{"score": n, "url": f"https://touchline.example/s/sample-token?score={n}"} for n in range(0, 11)],
    "comment_url": "https://touchline.example/s/sample-token",
    "low_label": LABELS["nps"][0],
    "high_label": LABELS["nps"][1],
}
