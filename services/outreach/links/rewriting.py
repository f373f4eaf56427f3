"""Every link of a customer message through the signed redirect: after the template is
rendered, each absolute ``http(s)`` link of the HTML body (``href="..."``) and each URL
of the text body becomes ``{public_url}/r/{token}``, the token sealing where it leads,
the message, the account, the contact, the playbook or broadcast and the resource (if
the message sends one). Links to Touchline itself (the unsubscribe link, a survey's score links,
anything under ``public_url``) are left alone: they answer back on their own. The
subject is never touched. One token per distinct URL per message, so the same link
twice in one mail is one link.

Done after rendering, not in the template, so every template (the starter ones, yours,
the recommend step's ``resource.url``) is tracked without naming a filter, and a
template that builds a URL from parts is tracked too.
"""

from __future__ import annotations

import html
import re
from datetime import datetime, timedelta
from typing import Any

from services.outreach.links import tokens
from shared.settings import Settings

# The lookahead only restates what the match needs (its first four letters): the same
# matches, found at a third of the cost, since a case-insensitive pattern that starts with
# \b gives the engine no literal to skip ahead to (about 10 us a message body).
_HREF = re.compile(r"""(?=[hH][rR][eE][fF])(\bhref\s*=\s*)(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_TEXT_URL = re.compile(r"""https?://[^\s<>"'`]+""", re.IGNORECASE)
_TRAILING = ".,;:!?)]}"  # sentence punctuation after a URL in prose is not part of it


class LinkMinter:
    """Mints the tracked link of each distinct URL of one message."""

    def __init__(self, settings: Settings, *, now: datetime, link: dict[str, Any]):
        self.settings, self.now = settings, now
        self.link = {k: v for k, v in link.items() if v is not None}
        self.base = settings.public_url
        self._made: dict[str, str] = {}

    def tracked(self, url: str) -> str:
        """The ``/r/`` link for ``url``; ``url`` itself if it is not an http(s) link or is ours."""
        if not url.lower().startswith(("https://", "http://")) or url.startswith(self.base + "/"):
            return url
        made = self._made.get(url)
        if made is None:
            token = tokens.mint(
                self.settings.secret,
                tokens.LINK,
                {**self.link, "t": url},
                now=self.now,
                valid_for=timedelta(days=self.settings.link_token_days),
            )
            made = self._made[url] = f"{self.base}/r/{token}"
        return made


def track_links(content: dict[str, str], minter: LinkMinter) -> dict[str, str]:
    """``content`` (subject, html_body, text_body) with its links tracked."""
    out = dict(content)
    if out.get("html_body"):
        out["html_body"] = _HREF.sub(lambda m: _href(m, minter), out["html_body"])
    if out.get("text_body"):
        out["text_body"] = _TEXT_URL.sub(lambda m: _text(m, minter), out["text_body"])
    return out


def _href(m: re.Match[str], minter: LinkMinter) -> str:
    quoted = m.group(2) if m.group(2) is not None else m.group(3)
    url = html.unescape(quoted).strip()
    tracked = minter.tracked(url)
    if tracked == url:
        return m.group(0)
    return f'{m.group(1)}"{html.escape(tracked)}"'


def _text(m: re.Match[str], minter: LinkMinter) -> str:
    url = m.group(0)
    tail = ""
    while url and url[-1] in _TRAILING:
        url, tail = url[:-1], url[-1] + tail
    return minter.tracked(url) + tail


def message_links(
    content: dict[str, str],
    settings: Settings,
    *,
    now: datetime,
    message_id: str,
    account_id: str,
    user_id: str | None,
    playbook_id: str | None = None,
    resource_id: str | None = None,
    broadcast_id: str | None = None,
) -> dict[str, str]:
    """A customer message's rendered content with its links tracked (unchanged when
    ``TOUCHLINE_LINK_TRACKING`` is off)."""
    if not settings.link_tracking:
        return content
    minter = LinkMinter(
        settings,
        now=now,
        link={"m": message_id, "a": account_id, "u": user_id, "p": playbook_id, "r": resource_id, "b": broadcast_id},
    )
    return track_links(content, minter)
