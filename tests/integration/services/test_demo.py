"""The demo's CSM pool: seeded once on both databases, keys saved under var/ readable by
the owner only. The demo pace: a new version of the starter win-back playbook, once,
and never over a version someone else saved."""

from __future__ import annotations


def test_the_demo_seeds_a_csm_pool_with_keys_saved_under_var(settings, session_factory):
    import json

    from services.demo import DEMO_CSMS, seed_csm_pool
    from services.outreach.engagements import repository as engagement_repo
    from shared.auth import authenticate

    created = seed_csm_pool(settings)
    assert set(created) == {c[0] for c in DEMO_CSMS}
    saved = json.loads((settings.var_dir / "demo-csm-keys.json").read_text())
    assert (settings.var_dir / "demo-csm-keys.json").stat().st_mode & 0o077 == 0
    with session_factory() as s:
        assert [c.id for c in engagement_repo.list_csms(s)] == sorted(c[0] for c in DEMO_CSMS)
        assert {cid: authenticate(s, key).csm_id for cid, key in saved.items()} == {cid: cid for cid in saved}
    assert seed_csm_pool(settings) == {}  # once


def test_the_demo_paces_the_starter_win_back_once_and_leaves_an_edited_one_alone(settings, session_factory, clock):
    from services.demo import DEMO_ACTOR, DEMO_PACED_WIN_BACK, pace_win_back
    from services.outreach.playbooks import repository as playbook_repo
    from services.outreach.playbooks import service as playbook_service
    from services.outreach.playbooks.schemas import PlaybookDefinition
    from services.outreach.starter import starter_playbooks
    from shared.db import transaction

    def current():
        with session_factory() as s:
            head = playbook_repo.get_head(s, "win-back")
            return head.current_version, playbook_repo.get_version(s, "win-back", head.current_version)

    assert pace_win_back(settings)  # seeds the starter content, then saves the demo pace over it
    version, paced = current()
    assert version == 2 and paced.created_by == DEMO_ACTOR and "demo pace" in paced.definition["name"]
    assert [s["duration"] for s in paced.definition["steps"] if s["type"] == "wait"] == ["2m", "3m"]
    assert paced.definition["steps"][-1]["time_box"] == "1h" == DEMO_PACED_WIN_BACK["steps"][-1]["time_box"]
    assert pace_win_back(settings) and current()[0] == 2  # again: nothing new

    edited = {**starter_playbooks()["win-back"], "name": "Our own win-back"}
    with transaction(session_factory) as s:
        playbook_service.save(s, "win-back", PlaybookDefinition.model_validate(edited), actor="ops:lead", now=clock.now())
    assert not pace_win_back(settings)
    version, kept = current()
    assert version == 3 and kept.created_by == "ops:lead" and kept.definition["name"] == "Our own win-back"
