"""Tracked links case by case: which links of a rendered message are rewritten, what a
token hides, and which tokens open (tests/integration/services/outreach/test_links.py
clicks them end to end)."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

from services.outreach.links import tokens
from services.outreach.links.rewriting import message_links
from services.outreach.links.service import PUBLISHING, Followed, click_event_id, follow, safe_target
from shared import b64url
from shared.settings import Settings
from tests.support.helpers import T0

SETTINGS = Settings(env="test", public_base_url="https://cs.example.test")


def _links(text: str) -> list[str]:
    return re.findall(r"https://cs\.example\.test/r/([A-Za-z0-9_-]+)", text)


def _opened(token: str) -> dict:
    opened = tokens.open_token(SETTINGS.secret, tokens.LINK, token, now=T0)
    assert opened is not None and not opened.expired
    return opened.data


def test_every_outside_link_of_both_bodies_is_tracked_and_ours_are_not():
    content = {
        "subject": "See https://help.example.com/a",
        "html_body": "<a href=\"https://help.example.com/a?x=1&amp;y=2\">A</a> <a HREF='http://blog.example.org/b'>B</a>"
        '<a href="mailto:ada@example.com">mail</a> <a href="https://cs.example.test/unsubscribe/abc">unsub</a>'
        '<a href="#top">top</a> <img src="https://img.example.com/x.png">',
        "text_body": "Read https://help.example.com/a?x=1&y=2. Or (http://blog.example.org/b), unsub: https://cs.example.test/unsubscribe/abc",
    }
    out = message_links(content, SETTINGS, now=T0, message_id="m-1", account_id="acme", user_id="ada", playbook_id="win-back")
    assert out["subject"] == content["subject"]  # never in the subject
    a, b = (html.unescape(t) for t in _links(out["html_body"]))
    assert _opened(a) == {
        "m": "m-1",
        "a": "acme",
        "u": "ada",
        "p": "win-back",
        "t": "https://help.example.com/a?x=1&y=2",
        "x": _opened(a)["x"],
    }
    assert _opened(b)["t"] == "http://blog.example.org/b"
    for untouched in ("mailto:ada@example.com", "https://cs.example.test/unsubscribe/abc", "#top", 'src="https://img.example.com/x.png"'):
        assert untouched in out["html_body"]
    # The same URL is one token in both parts; prose punctuation stays outside the link.
    assert _links(out["text_body"]) == [a, b]
    assert re.search(
        r"/r/[A-Za-z0-9_-]+\. Or \(https://cs\.example\.test/r/[A-Za-z0-9_-]+\), unsub: https://cs\.example\.test/unsubscribe/abc$",
        out["text_body"],
    )
    # Nothing of the target, the account or the contact shows in a token.
    assert not re.search(rb"help|acme|ada|win-back", b64url.decode(a))


def test_tracking_off_leaves_the_message_as_rendered():
    content = {"subject": "s", "html_body": '<a href="https://help.example.com/a">A</a>', "text_body": "https://help.example.com/a"}
    off = SETTINGS.model_copy(update={"link_tracking": False})
    assert message_links(content, off, now=T0, message_id="m", account_id="acme", user_id=None) == content


def test_only_a_token_we_sealed_for_links_opens_and_it_expires():
    token = tokens.mint(SETTINGS.secret, tokens.LINK, {"a": "acme", "t": "https://x.example"}, now=T0, valid_for=timedelta(days=1))
    assert _opened(token)["t"] == "https://x.example"
    assert tokens.open_token(SETTINGS.secret, tokens.LINK, token, now=T0 + timedelta(days=1)).expired
    assert tokens.open_token("another secret of enough length 0123456789", tokens.LINK, token, now=T0) is None
    assert tokens.open_token(SETTINGS.secret, tokens.SURVEY, token, now=T0) is None
    for bad in ("", token + "=", token[:-1], token + "A", " " + token, "A" * 5000):
        assert tokens.open_token(SETTINGS.secret, tokens.LINK, bad, now=T0) is None, bad


def test_a_replay_within_the_window_is_the_same_event_and_a_later_click_is_another():
    w = SETTINGS.link_click_dedupe_seconds
    start = datetime.fromtimestamp(int(T0.timestamp()) // w * w, UTC)
    first = click_event_id("tok", start, SETTINGS)
    assert click_event_id("tok", start + timedelta(seconds=w - 1), SETTINGS) == first
    assert click_event_id("tok", start + timedelta(seconds=w), SETTINGS) != first
    assert click_event_id("tok2", start, SETTINGS) != first


def test_only_web_addresses_with_a_host_are_redirected_to():
    assert safe_target("https://help.example.com/a?b=c")
    for bad in ("javascript:alert(1)", "//evil.example", "https://", "https://a.example/\r\nSet-Cookie: x", "data:text/html,x", None, 3):
        assert not safe_target(bad), bad


def test_a_broker_that_fails_a_click_is_left_alone_for_a_while_and_readers_still_go_through():
    calls = []

    def down(event):
        calls.append(event)
        raise OSError("broker down")

    link = {"a": "acme", "u": "ada", "t": "https://help.example.com/a"}
    first, second = (tokens.mint(SETTINGS.secret, tokens.LINK, link, now=T0, valid_for=timedelta(days=1)) for _ in range(2))
    try:
        assert follow(SETTINGS, first, now=T0, publish=down) == Followed("https://help.example.com/a", "unpublished")
        assert follow(SETTINGS, second, now=T0, publish=down) == Followed("https://help.example.com/a", "unpublished")
        assert len(calls) == 1  # the second reader did not wait on the broker
        PUBLISHING.reset()
        assert follow(SETTINGS, first, now=T0, publish=calls.append).outcome == "recorded"  # a lost click can be clicked again
    finally:
        PUBLISHING.reset()


def test_a_token_of_exactly_the_longest_length_opens_and_one_character_more_is_refused():
    """MAX_TOKEN_CHARS is the longest token that opens (a long target URL), not one less."""

    def minted(n: int) -> str:
        data = {"a": "acme", "t": "https://x.example/" + "p" * n}
        return tokens.mint(SETTINGS.secret, tokens.LINK, data, now=T0, valid_for=timedelta(days=1))

    longest = next(t for t in map(minted, range(1400, 1600)) if len(t) == tokens.MAX_TOKEN_CHARS)
    assert _opened(longest)["a"] == "acme"
    assert tokens.open_token(SETTINGS.secret, tokens.LINK, longest + "A", now=T0) is None
