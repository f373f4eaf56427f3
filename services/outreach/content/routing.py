"""Which resource a recipient gets, and why: pure functions over the library and what
is known of the recipient (:class:`Profile`), no database.

A resource's tags say whom it is for; an empty tag list means anyone. For a recipient,
each resource is either **excluded** (it is for others: one of its non-empty tag lists
does not hold the recipient's value, or the value is unknown; its language is not the
contact's; the account already uses every feature it teaches; the contact already
received it; the step does not send its kind) or **scored**: points for each tag list
that holds the recipient's value (:data:`WEIGHTS`) and for each feature it teaches that
the account never used (:data:`FEATURE_POINTS`). The best score at or above the step's
``min_score`` wins; ties go to the smaller id, so the same inputs always pick the same
resource. No match: the step's fallback resource if the contact has not received it,
else nothing, each with the reason written down.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

# The goal a signal's kind asks for (a recommend step's `goal` overrides it).
GOAL_OF_KIND = {
    "churn_risk": "win-back",
    "expansion": "expansion",
    "lifecycle": "adoption",
    "onboarding": "adoption",
    "adoption": "adoption",
    "renewal": "renewal",
    "renewal_risk": "renewal",
}
# tag list -> (what of the recipient it is matched against, points when it holds it)
WEIGHTS: dict[str, tuple[str, int]] = {
    "goals": ("goal", 4),
    "use_cases": ("use_case", 3),
    "industries": ("industry", 2),
    "segments": ("segment", 2),
    "lifecycle_stages": ("lifecycle_stage", 2),
    "company_sizes": ("company_size", 1),
    "roles": ("role", 1),
}
FEATURE_POINTS = 2  # per feature the resource teaches that the account never used


class ResourceLike(Protocol):
    id: str
    kind: str
    title: str
    url: str
    summary: str
    language: str
    goals: list[Any]
    use_cases: list[Any]
    industries: list[Any]
    company_sizes: list[Any]
    lifecycle_stages: list[Any]
    segments: list[Any]
    roles: list[Any]
    features: list[Any]


@dataclass(frozen=True)
class Profile:
    """What routing knows of one recipient: the goal, the account's and contact's values
    for each tag (None: unknown), the contact's language, the feature events the account
    ever sent."""

    values: Mapping[str, str | None]
    language: str | None = None
    seen_events: frozenset[str] = frozenset()


def goal_for(kind: str | None, step_goal: str | None) -> str | None:
    return step_goal or GOAL_OF_KIND.get(kind or "")


def _text(value: Any) -> str | None:
    return str(value).strip() or None if value is not None else None


def profile(
    *, goal: str | None, account: Any, role: str | None, contact_traits: Mapping[str, Any] | None, seen_events: Iterable[str]
) -> Profile:
    """The recipient as routing sees it: the goal; the account's traits ``use_case``,
    ``industry``, ``company_size``; its segment and lifecycle stage; the contact's role and
    language (the contact's ``language`` trait, else the account's)."""
    traits = dict(getattr(account, "traits", None) or {})
    contact = dict(contact_traits or {})
    return Profile(
        values={
            "goal": goal,
            "use_case": _text(traits.get("use_case")),
            "industry": _text(traits.get("industry")),
            "company_size": _text(traits.get("company_size")),
            "segment": _text(getattr(account, "segment", None)),
            "lifecycle_stage": _text(getattr(account, "lifecycle_stage", None)),
            "role": _text(role),
        },
        language=_text(contact.get("language")) or _text(traits.get("language")),
        seen_events=frozenset(seen_events),
    )


@dataclass
class Scored:
    resource: ResourceLike
    score: int
    matched: dict[str, str] = field(default_factory=dict)
    features_not_adopted: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Entry:
    """A resource made ready for scoring many recipients: its non-empty tag lists
    folded to lower case once, not once per recipient."""

    resource: ResourceLike
    tags: tuple[tuple[str, str, int, frozenset[str]], ...]  # (tag list, what it matches, points, its values folded)
    language: str
    features: tuple[str, ...]

    @classmethod
    def of(cls, resource: ResourceLike) -> Entry:
        tags = tuple(
            (tag, what, points, frozenset(str(v).casefold() for v in getattr(resource, tag)))
            for tag, (what, points) in WEIGHTS.items()
            if getattr(resource, tag)
        )
        return cls(resource, tags, resource.language.split("-")[0].lower(), tuple(resource.features))


def library(resources: Iterable[ResourceLike | Entry]) -> list[Entry]:
    return [r if isinstance(r, Entry) else Entry.of(r) for r in resources]


def _score(entry: Entry, who: Profile) -> Scored | None:
    """The entry's score for ``who``; None when it is excluded (:func:`assess` says why)."""
    values = who.values
    out = Scored(entry.resource, 0)
    for _tag, what, points, wanted in entry.tags:
        value = values.get(what)
        if value is None or value.casefold() not in wanted:
            return None
        out.matched[what] = value
        out.score += points
    if who.language and entry.language != who.language.split("-")[0].lower():
        return None
    if entry.features:
        out.features_not_adopted = [f for f in entry.features if f not in who.seen_events]
        if not out.features_not_adopted:
            return None
        out.score += FEATURE_POINTS * len(out.features_not_adopted)
    return out


def assess(resource: ResourceLike, who: Profile) -> Scored | str:
    """The resource's score for ``who``, or why it is excluded."""
    scored = _score(Entry.of(resource), who)
    if scored is not None:
        return scored
    for tag, (what, _points) in WEIGHTS.items():
        wanted = getattr(resource, tag) or []
        if not wanted:
            continue
        value = who.values.get(what)
        if value is None:
            return f"for {tag.replace('_', ' ')} {', '.join(wanted)}; the recipient's {what.replace('_', ' ')} is unknown"
        if value.casefold() not in {str(w).casefold() for w in wanted}:
            return f"for {tag.replace('_', ' ')} {', '.join(wanted)}, not {value}"
    if who.language and resource.language.split("-")[0].lower() != who.language.split("-")[0].lower():
        return f"in {resource.language}, the contact reads {who.language}"
    return f"teaches {', '.join(resource.features)}, which the account already uses"


@dataclass
class Choice:
    """The resource for one recipient (None: nothing to send) and why, as recorded on
    the message (``payload["recommendation"]``)."""

    resource: ResourceLike | None
    explanation: dict[str, Any]


def _why(s: Scored) -> str:
    parts = [f"{what.replace('_', ' ')} {value} (+{WEIGHTS[_tag_of(what)][1]})" for what, value in s.matched.items()]
    parts += [f"feature {f} not used yet (+{FEATURE_POINTS})" for f in s.features_not_adopted]
    return f"{s.resource.id} scored {s.score}: " + ", ".join(parts)


def _tag_of(what: str) -> str:
    return next(tag for tag, (w, _p) in WEIGHTS.items() if w == what)


def describe(resource: ResourceLike) -> dict[str, Any]:
    return {"resource_id": resource.id, "kind": resource.kind, "title": resource.title, "url": resource.url}


def choose(
    resources: Iterable[ResourceLike | Entry],
    who: Profile,
    *,
    received: set[str],
    kinds: Iterable[str] = (),
    min_score: int = 1,
    fallback: str | None = None,
) -> Choice:
    """The best resource for ``who`` among ``resources`` (the enabled ones), never one
    of ``received``; ties to the smaller id. Falls back to ``fallback`` when none scores
    ``min_score``."""
    allowed_kinds = set(kinds)
    entries = library(resources)
    by_id = {e.resource.id: e.resource for e in entries}
    scored: list[Scored] = []
    already = sorted(received & set(by_id))
    for e in entries:
        r = e.resource
        if r.id in received or (allowed_kinds and r.kind not in allowed_kinds):
            continue
        result = _score(e, who)
        if result is not None and result.score >= min_score:
            scored.append(result)
    scored.sort(key=lambda s: (-s.score, s.resource.id))
    base: dict[str, Any] = {"goal": who.values.get("goal"), "considered": len(by_id), "eligible": len(scored)}
    if already:
        base["already_received"] = already
    if scored:
        best = scored[0]
        explanation = {
            **describe(best.resource),
            "score": best.score,
            "matched": dict(best.matched),
            "features_not_adopted": list(best.features_not_adopted),
            "fallback": False,
            **base,
            "why": _why(best),
        }
        if len(scored) > 1:
            explanation["runner_up"] = {"resource_id": scored[1].resource.id, "score": scored[1].score}
        return Choice(best.resource, explanation)
    nothing = f"no resource scored {min_score} or more for this recipient"
    if fallback is not None:
        spare = by_id.get(fallback)
        if spare is not None and fallback not in received:
            return Choice(
                spare,
                {
                    **describe(spare),
                    "score": 0,
                    "matched": {},
                    "features_not_adopted": [],
                    "fallback": True,
                    **base,
                    "why": f"{nothing}: the step's fallback",
                },
            )
        nothing += f"; the fallback {fallback} " + (
            "was already received" if spare is not None else "is not in the library (removed or disabled)"
        )
    return Choice(None, {**base, "why": nothing})
