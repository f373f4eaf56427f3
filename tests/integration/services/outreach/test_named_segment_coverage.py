"""Named segments in the CSM roster's coverage (issue 22, item 1; docs/engagements.md,
"Assignment"), on both databases with the simulated clock: a CSM whose ``segments`` name
a named segment covers the engagements of its members now, beside the account segments
a CSM names today; the assignment pass and CS Ops' reassignment agree, and an account
that enters the segment is covered at the next pass."""

from __future__ import annotations

import pytest

from services.outreach.engagements import assignment
from services.outreach.engagements.roster import put
from services.outreach.engagements.schemas import CsmIn
from services.outreach.models import Engagement
from services.rules.evaluation.segments import run_segments
from services.rules.segments import service as segments
from shared.db import transaction
from shared.errors import Unprocessable
from tests.support.engagements import engagement, open_engagement, worker
from tests.support.outreach import add_account

FINTECH = {"id": "fintech", "name": "Fintech", "condition": {"field": "account.traits.industry", "op": "==", "value": "fintech"}}


def test_a_csm_covering_a_named_segment_takes_its_members_engagements(session_factory, settings, clock):
    settings = settings.model_copy(update={"engagement_sticky": False})
    add_account(session_factory, "fin", segment="smb", traits={"industry": "fintech"})
    add_account(session_factory, "ret", segment="smb", traits={"industry": "retail"})
    add_account(session_factory, "ent", segment="enterprise", traits={"industry": "retail"})
    with transaction(session_factory) as s:
        segments.create(s, segments.parse(FINTECH, 400), "ops:test", clock.now())
        for cid, segs in (("fay", ["fintech"]), ("eve", ["enterprise"])):
            put(
                s,
                cid,
                CsmIn(name=cid.title(), email=f"{cid}@pool.test", capacity=5, segments=segs),
                actor="test",
                now=clock.now(),
                settings=settings,
            )
    run_segments(session_factory, settings, clock.now())
    ids = {a: open_engagement(session_factory, settings, clock, a) for a in ("fin", "ret", "ent")}
    w = worker(settings, session_factory, clock)
    assert w.poll_once() == 2
    # fin is in the named segment fintech (its account segment is smb, which nobody covers);
    # ent's account segment is enterprise; ret is in neither: it waits.
    assert {a: engagement(session_factory, e).csm_id for a, e in ids.items()} == {"fin": "fay", "ret": None, "ent": "eve"}

    # CS Ops' reassignment asks the same question.
    for account, to in (("fin", "eve"), ("ent", "fay")):
        with transaction(session_factory) as s, pytest.raises(Unprocessable) as refused:
            assignment.reassign(s, s.get(Engagement, ids[account]), to, actor="ops:test", now=clock.now(), settings=settings, reason="")
        assert refused.value.code == "csm_does_not_cover"

    # ret turns fintech: once the segment has it, the next pass gives it to fay.
    with transaction(session_factory) as s:
        from services.ingest.models import Account

        s.get(Account, "ret").traits = {"industry": "fintech"}
    assert w.poll_once() == 0  # not a member yet
    run_segments(session_factory, settings, clock.now())
    assert w.poll_once() == 1
    assert engagement(session_factory, ids["ret"]).csm_id == "fay"
