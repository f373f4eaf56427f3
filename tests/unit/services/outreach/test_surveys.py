"""Survey links and results arithmetic, case by case (end to end:
tests/integration/services/outreach/test_surveys.py)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from services.outreach.links import tokens
from services.outreach.surveys.links import survey_context
from services.outreach.surveys.service import tally, valid_score
from shared.settings import Settings
from tests.support.helpers import T0

SETTINGS = Settings(env="test", public_base_url="https://cs.example.test", product_name="Acme Analytics")


def test_nps_counts_promoters_passives_and_detractors():
    assert tally("nps", [10, 9, 8, 7, 6, 0]) == {"answered": 6, "promoters": 2, "passives": 2, "detractors": 2, "nps": 0.0}
    assert tally("nps", [9, 9, 3]) == {"answered": 3, "promoters": 2, "passives": 0, "detractors": 1, "nps": 33.3}
    assert tally("nps", []) == {"answered": 0, "promoters": 0, "passives": 0, "detractors": 0, "nps": None}
    assert tally("csat", [5, 4, 3, 1]) == {"answered": 4, "satisfied": 2, "csat": 50.0}


def test_each_scale_takes_its_own_scores():
    assert [n for n in range(-1, 12) if valid_score("nps", n)] == list(range(11))
    assert [n for n in range(-1, 12) if valid_score("csat", n)] == [1, 2, 3, 4, 5]


def test_every_score_link_carries_one_sealed_token_for_its_contact():
    ctx = survey_context(
        SETTINGS, now=T0, survey_id="q1", scale="csat", question=None, account_id="acme", user_id="ada", message_id="m-1", playbook_id="p"
    )
    assert ctx["question"] == "How satisfied are you with Acme Analytics?"
    assert [s["score"] for s in ctx["scores"]] == [1, 2, 3, 4, 5]
    urls = [urlsplit(s["url"]) for s in ctx["scores"]]
    assert {u.path for u in urls} == {urlsplit(ctx["comment_url"]).path} and [parse_qs(u.query)["score"] for u in urls][0] == ["1"]
    token = urls[0].path.removeprefix("/s/")
    assert ctx["comment_url"] == f"https://cs.example.test/s/{token}"
    opened = tokens.open_token(SETTINGS.secret, tokens.SURVEY, token, now=T0)
    assert opened is not None and {k: opened.data[k] for k in "skaump"} == {
        "s": "q1", "k": "csat", "a": "acme", "u": "ada", "m": "m-1", "p": "p"
    }  # fmt: skip
    assert tokens.open_token(SETTINGS.secret, tokens.LINK, token, now=T0) is None  # not a tracked link
