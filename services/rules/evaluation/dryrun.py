"""Dry-run: would a rule fire now for one account, and why. Reads only."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from services.ingest import interface as ingest
from services.rules.evaluation.engine import EventSubject, Measurements, audience_explanation
from services.rules.language import RuleDefinition, leaves
from services.rules.language.evaluate import evidence
from services.rules.signals import repository as signals_repo
from shared.errors import NotFound, Unprocessable


def _event_from_body(obj: Any, account_id: str, now: datetime) -> EventSubject:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise Unprocessable([{"pointer": "/event", "message": 'event is {"name": "login", "properties": {...}, "user_id": "u1"}'}])
    props = obj.get("properties", {})
    if not isinstance(props, dict):
        raise Unprocessable([{"pointer": "/event/properties", "message": "properties is an object"}])
    return EventSubject(str(obj.get("event_id") or f"dry-run-{uuid.uuid4()}"), account_id, obj.get("user_id"), obj["name"], now, props)


def dry_run(
    session: Session, d: RuleDefinition, version: int | None, account_id: str, now: datetime, event_obj: Any = None
) -> dict[str, Any]:
    meas = Measurements(session, now, [account_id])
    if account_id not in meas.rows():
        raise NotFound(f"no account {account_id!r}")
    trigger: dict[str, Any]
    event = None
    if d.trigger.scheduled:
        trigger = {"type": "schedule", "message": "evaluated on every tick over the audience"}
    else:
        if event_obj is not None:
            event = _event_from_body(event_obj, account_id, now)
            source: str | None = "request body"
        else:
            stored = ingest.latest_events(session, account_id, list(d.trigger.events))
            if stored:
                e = stored[0]
                event = EventSubject(e.event_id, e.account_id, e.user_id, e.name, e.timestamp, e.properties or {})
            source = "latest stored event" if event else None
        needs = any(leaf.needs_event for leaf in leaves(d.condition))
        trigger = {
            "type": "events",
            "events": list(d.trigger.events),
            "source": source,
            "event": None
            if event is None
            else {
                "event_id": event.event_id,
                "name": event.name,
                "user_id": event.user_id,
                "timestamp": event.timestamp.isoformat(),
                "properties": event.properties,
            },
        }
        if event is not None and event.name not in d.trigger.events:
            trigger["message"] = f"{event.name!r} does not trigger this rule; it fires on {', '.join(d.trigger.events)}"
        elif event is None and needs:
            trigger["message"] = 'no triggering event stored for this account: event predicates are false; pass one as {"event": {...}}'
    audience = audience_explanation(d, account_id, meas)
    ok, tree = meas.explain(d.condition, account_id, event)
    until = signals_repo.cooldown_until(session, d.id, account_id)
    cooldown = {
        "active": bool(until and until > now),
        "until": until.isoformat(timespec="seconds") if until else None,
        "length": d.to_dict()["cooldown"],
    }
    triggered = d.trigger.scheduled or event is None or event.name in d.trigger.events
    would = audience["match"] and ok and not cooldown["active"] and triggered
    if would:
        summary = "would fire: the account is in the audience and every predicate holds"
    else:
        why = []
        if not audience["match"]:
            why.append("the account is not in the audience (" + ", ".join(c["filter"] for c in audience["checks"] if not c["result"]) + ")")
        if not ok:
            failed = [_failed(tree)]
            why.append("the condition does not hold (" + "; ".join(f for f in failed if f) + ")")
        if cooldown["active"]:
            why.append(f"the rule already fired for this account; cooldown until {cooldown['until']}")
        if not triggered:
            why.append(trigger["message"])
        summary = "would not fire: " + "; ".join(why)
    reasons = [] if would else why
    return {
        "rule_id": d.id,
        "version": version,
        "account_id": account_id,
        "now": now,
        "would_fire": would,
        "summary": summary,
        "reasons": reasons,
        "audience": audience,
        "trigger": trigger,
        "condition": tree,
        "cooldown": cooldown,
        "evidence": evidence(tree) if ok else None,
    }


def _failed(tree: dict[str, Any]) -> str:
    """The predicates that made the tree false, as text."""
    out: list[str] = []

    def walk(e: dict[str, Any], negated: bool = False) -> None:
        if "all" in e or "any" in e:
            for c in e.get("all", e.get("any", [])):
                walk(c, negated)
        elif "not" in e:
            walk(e["not"], not negated)
        elif e["result"] == negated:
            shown = "never seen" if e.get("never_seen") else e["value"]
            if e.get("undefined"):
                shown = "undefined (no numeric value in the window)" if e.get("values") == 0 else "undefined"
            out.append(f"{'not ' if negated else ''}{e['predicate']} = {shown}, needs {e['op']} {e['threshold']}")

    walk(tree)
    return "; ".join(out)
