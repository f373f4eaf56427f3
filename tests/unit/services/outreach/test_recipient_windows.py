"""active_users:<N>d looks back at most MAX_ACTIVE_DAYS, in a playbook's send step as in a
broadcast: a larger window overflowed the date arithmetic when the step ran (a 500 in a
broadcast's preview), so it is refused when saved, at the field's path."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.outreach.broadcasts.schemas import parse_broadcast
from services.outreach.playbooks.schemas import PlaybookDefinition
from services.outreach.playbooks.steps.definitions import MAX_ACTIVE_DAYS
from shared.errors import pointer_errors


def playbook(to: str) -> dict:
    return {
        "name": "Actives",
        "trigger": {"rules": ["no-login-14d"]},
        "steps": [{"type": "send", "channel": "email", "template": "win-back", "to": [to]}],
    }


def test_a_send_step_may_look_back_as_far_as_usage_is_kept():
    PlaybookDefinition.model_validate(playbook(f"active_users:{MAX_ACTIVE_DAYS}d"))


@pytest.mark.parametrize("days", [MAX_ACTIVE_DAYS + 1, 99_999_999])
def test_a_longer_window_is_refused_at_its_path(days):
    with pytest.raises(ValidationError) as caught:
        PlaybookDefinition.model_validate(playbook(f"active_users:{days}d"))
    [error] = pointer_errors(caught.value)
    assert error["pointer"] == "/steps/0/to"
    assert f"at most {MAX_ACTIVE_DAYS} days" in error["message"]


def test_a_broadcast_refuses_it_by_the_same_rule():
    assert MAX_ACTIVE_DAYS == 400
    with pytest.raises(Exception, match=f"at most {MAX_ACTIVE_DAYS} days"):
        parse_broadcast({"segment": "s", "template": "t", "to": [f"active_users:{MAX_ACTIVE_DAYS + 1}d"]})
