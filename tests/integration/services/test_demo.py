"""The demo's CSM pool: seeded once on both databases, keys saved under var/ readable by
the owner only."""
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
