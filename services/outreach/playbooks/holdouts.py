"""Holdout groups: which enrolled accounts receive nothing, so a playbook's lift can be
measured against them (services/outreach/playbooks/service.py reports it)."""

from __future__ import annotations

import hashlib


def holdout_bucket(playbook_id: str, account_id: str) -> float:
    """A number in [0, 100) fixed by the playbook and the account, so a replay (or
    another worker) assigns the account to the same group."""
    digest = hashlib.sha256(f"{playbook_id}\x1f{account_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def is_held_out(playbook_id: str, account_id: str, percent: float) -> bool:
    return percent > 0 and holdout_bucket(playbook_id, account_id) < percent


def escalation_bucket_key(playbook_id: str) -> str:
    """The escalation holdout's salt: independent of the message holdout's groups."""
    return f"{playbook_id}\x1fescalation"
