"""What others may know about outreach's outcomes, published through
:mod:`services.outreach.interface` (the service's one door).

- :func:`signals_with_decision`: which signals outreach has recorded a decision for
  (each is settled with the rules service when it is recorded).
- :func:`holdout_groups`: which accounts a playbook holds out of its messages and of
  its escalation (deterministic: what the engine will decide for them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from services.outreach.playbooks.holdouts import escalation_bucket_key, is_held_out
from services.outreach.playbooks.repository import signals_with_decision as signals_with_decision  # the query is the repository's

DECISIONS = ("enrolled", "held_out", "stopped", "skipped", "no_matching_playbook")


def holdout_groups(playbook_id: str, definition: dict[str, Any], account_ids: Iterable[str]) -> dict[str, list[str]]:
    """For accounts a playbook enrols: ``message_holdout`` (they get no message, the
    playbook's ``holdout_percent``) and ``escalation_holdout`` (treated, but its
    ``open_engagement`` step records a ``held_out`` engagement instead of escalating,
    that step's ``holdout_percent``). The engine decides the same, by the same hashes."""
    ids = sorted(set(account_ids))
    message = {a for a in ids if is_held_out(playbook_id, a, float(definition.get("holdout_percent") or 0))}
    steps = [s for s in definition.get("steps") or [] if s.get("type") == "open_engagement"]
    pct = float(steps[0].get("holdout_percent") or 0) if steps else 0.0
    escalation = {a for a in ids if a not in message and is_held_out(escalation_bucket_key(playbook_id), a, pct)}
    return {"message_holdout": sorted(message), "escalation_holdout": sorted(escalation)}
