"""The recommend step's choice, case by case (pure: services/outreach/content/routing.py):
a tagged resource goes only to its tags, unknown values exclude, features already used
exclude, the contact's language and role count, ties go to the smaller id, and every
choice or refusal says why. End to end: tests/integration/services/outreach/test_recommend.py."""

from __future__ import annotations

from types import SimpleNamespace

from services.outreach.content import routing
from services.outreach.content.schemas import ResourceIn


def res(rid: str, **tags) -> SimpleNamespace:
    body = ResourceIn(kind=tags.pop("kind", "article"), title=rid.title(), url=f"https://help.example.com/{rid}", **tags)
    return SimpleNamespace(id=rid, **body.model_dump())


def who(goal="win-back", role="champion", language=None, seen=(), **traits) -> routing.Profile:
    account = SimpleNamespace(traits=traits, segment=traits.pop("segment", "smb"), lifecycle_stage=traits.pop("stage", "adopted"))
    return routing.profile(
        goal=goal, account=account, role=role, contact_traits={"language": language} if language else {}, seen_events=seen
    )


def pick(library, profile, received=(), **kw) -> routing.Choice:
    return routing.choose(library, profile, received=set(received), **kw)


def test_a_tagged_resource_goes_only_to_its_tags_and_an_unknown_value_excludes():
    guide = res("guide", goals=["win-back"], industries=["fintech"])
    assert pick([guide], who(industry="FinTech")).resource is guide
    assert routing.assess(guide, who(industry="retail")) == "for industries fintech, not retail"
    assert routing.assess(guide, who()) == "for industries fintech; the recipient's industry is unknown"
    assert routing.assess(guide, who(goal=None, industry="fintech")) == "for goals win-back; the recipient's goal is unknown"


def test_scores_add_up_and_ties_go_to_the_smaller_id():
    library = [res("b-guide", goals=["win-back"]), res("a-guide", goals=["win-back"]), res("c-admin", goals=["win-back"], roles=["admin"])]
    choice = pick(library, who(role="champion"))
    assert choice.resource.id == "a-guide" and choice.explanation["runner_up"] == {"resource_id": "b-guide", "score": 4}
    assert pick(library, who(role="admin")).resource.id == "c-admin"  # role adds a point
    assert pick(list(reversed(library)), who()).resource.id == "a-guide"  # order of the library does not matter


def test_features_already_used_exclude_and_unused_ones_score():
    teach = res("teach", features=["report_created", "alert_configured"])
    assert routing.assess(teach, who(seen={"report_created", "alert_configured"})) == (
        "teaches report_created, alert_configured, which the account already uses"
    )
    scored = routing.assess(teach, who(seen={"report_created"}))
    assert scored.score == 2 and scored.features_not_adopted == ["alert_configured"]


def test_language_kinds_min_score_received_and_fallback():
    en, de = res("en-guide", goals=["win-back"]), res("de-guide", goals=["win-back"], language="de")
    assert pick([en, de], who(language="de-AT")).resource is de
    assert pick([en, de], who()).resource is de  # unknown language: any; de-guide < en-guide
    assert pick([en, de], who(), kinds=["video"]).resource is None
    assert pick([en], who(), min_score=5).explanation["why"] == "no resource scored 5 or more for this recipient"
    spare = res("spare", goals=["adoption"])
    choice = pick([en, spare], who(), received={"en-guide"}, fallback="spare")
    assert choice.resource is spare and choice.explanation["fallback"] is True and choice.explanation["already_received"] == ["en-guide"]
    gone = pick([en], who(), received={"en-guide"}, fallback="removed")
    assert gone.resource is None and gone.explanation["why"].endswith("the fallback removed is not in the library (removed or disabled)")


def test_the_goal_comes_from_the_step_else_the_signal_kind():
    assert routing.goal_for("churn_risk", None) == "win-back"
    assert routing.goal_for("expansion", None) == "expansion"
    assert routing.goal_for("churn_risk", "renewal") == "renewal"
    assert routing.goal_for("custom_kind", None) is None


def test_tags_and_unused_features_add_up_and_the_explanation_names_the_values_matched():
    """Tag points and feature points add (4 for the goal, 1 for the role, 2 for each of the
    two features the account never used), and the explanation names the recipient's own
    values that matched."""
    teach = res("teach", goals=["win-back"], roles=["admin"], features=["report_created", "alert_configured", "dashboard_shared"])
    choice = pick([teach], who(role="admin", seen={"report_created"}))
    assert choice.explanation["score"] == 4 + 1 + 2 * 2
    assert choice.explanation["matched"] == {"goal": "win-back", "role": "admin"}
    assert choice.explanation["why"] == (
        "teach scored 9: goal win-back (+4), role admin (+1), "
        "feature alert_configured not used yet (+2), feature dashboard_shared not used yet (+2)"
    )
