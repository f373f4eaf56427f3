"""The content library on both databases: CRUD over the API (ops writes, a CSM reads),
paging and filters, 422 with a JSON pointer per problem, the import from YAML and CSV
(all or nothing, through the real CLI) and the starter library."""

from __future__ import annotations

from sqlalchemy import select

from services.outreach.models import Resource
from services.outreach.starter import seed_starter_content, starter_resources
from shared.db import transaction
from shared.models import AuditRecord
from tests.support.helpers import T0, auth, run_cli

GUIDE = {
    "kind": "article",
    "title": "Five reports every analytics team starts with",
    "url": "https://help.example.com/guides/first-reports",
    "summary": "Step by step.",
    "goals": ["adoption", "win-back"],
    "use_cases": ["analytics"],
    "features": ["report_created"],
}


async def test_create_change_read_list_and_remove(api, keys, session_factory):
    ops, csm = auth(keys["ops"]), auth(keys["csm"])
    r = await api.put("/v1/resources/first-reports", json=GUIDE, headers=ops)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1 and r.json()["language"] == "en" and r.json()["industries"] == []
    assert (await api.put("/v1/resources/first-reports", json=GUIDE, headers=ops)).json()["version"] == 1  # unchanged
    r = await api.put("/v1/resources/first-reports", json={**GUIDE, "title": "Five first reports"}, headers=ops)
    assert r.json()["version"] == 2 and r.json()["title"] == "Five first reports"
    assert (await api.put("/v1/resources/first-reports", json=GUIDE, headers=csm)).status_code == 403  # a CSM reads only
    assert (await api.get("/v1/resources/first-reports", headers=csm)).json()["use_cases"] == ["analytics"]
    assert (await api.get("/v1/resources/nope", headers=ops)).status_code == 404

    await api.put(
        "/v1/resources/alerts-video", json={**GUIDE, "kind": "video", "goals": ["expansion"], "use_cases": ["monitoring"]}, headers=ops
    )
    await api.put("/v1/resources/renewal-review", json={**GUIDE, "kind": "checklist", "goals": ["renewal"], "use_cases": []}, headers=ops)

    async def ids(**params) -> list[str]:
        r = await api.get("/v1/resources", params=params, headers=ops)
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()["items"]]

    assert await ids() == ["alerts-video", "first-reports", "renewal-review"]
    assert await ids(kind="video") == ["alerts-video"]
    assert await ids(goal="win-back") == ["first-reports"]
    assert await ids(goal="renewal") == ["renewal-review"]
    assert await ids(tag="monitoring") == ["alerts-video"]
    assert await ids(tag="analytic") == []  # a whole tag, not a prefix
    page = (await api.get("/v1/resources", params={"limit": 2}, headers=ops)).json()
    assert [x["id"] for x in page["items"]] == ["alerts-video", "first-reports"] and page["next_cursor"] == "first-reports"
    assert await ids(limit=2, cursor=page["next_cursor"]) == ["renewal-review"]

    assert (await api.delete("/v1/resources/alerts-video", headers=csm)).status_code == 403
    assert (await api.delete("/v1/resources/alerts-video", headers=ops)).status_code == 204
    assert (await api.delete("/v1/resources/alerts-video", headers=ops)).status_code == 404
    assert await ids() == ["first-reports", "renewal-review"]
    with session_factory() as s:
        audit = s.scalars(select(AuditRecord).where(AuditRecord.object_id == "first-reports").order_by(AuditRecord.id)).all()
        assert [(a.action, a.version) for a in audit] == [("create", 1), ("update", 2)]
        assert s.scalars(select(AuditRecord.action).where(AuditRecord.object_id == "alerts-video")).all() == ["create", "delete"]


async def test_a_bad_resource_is_422_with_a_pointer_per_problem(api, keys, session_factory):
    ops = auth(keys["ops"])
    cases = [
        ({**GUIDE, "url": "javascript:alert(1)"}, "/url", "https://"),
        ({**GUIDE, "url": "ftp://files.example.com/guide.pdf"}, "/url", "https://"),
        ({**GUIDE, "url": "https://user:secret@help.example.com/x"}, "/url", "credentials"),
        ({**GUIDE, "url": "https:///no-host"}, "/url", "no host"),
        ({**GUIDE, "url": "https://help.example.com/a guide"}, "/url", "spaces"),
        ({**GUIDE, "kind": "podcast"}, "/kind", "article"),
        ({**GUIDE, "goals": ["adoption", "world-peace"]}, "/goals/1", "win-back"),
        ({**GUIDE, "roles": ["ceo"]}, "/roles/0", "champion"),
        ({**GUIDE, "use_cases": [""]}, "/use_cases", "1 to 64"),
        ({**GUIDE, "colour": "red"}, "/colour", "not permitted"),
        ({k: v for k, v in GUIDE.items() if k != "title"}, "/title", "required"),
    ]
    for body, pointer, words in cases:
        r = await api.put("/v1/resources/bad", json=body, headers=ops)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"] == "resource_invalid"
        [problem] = r.json()["detail"]
        assert problem["pointer"] == pointer and words in problem["message"], (body, problem)
    r = await api.put("/v1/resources/bad", content=b"{not json", headers={**ops, "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["pointer"] == ""
    assert (await api.put("/v1/resources/Bad Id", json=GUIDE, headers=ops)).status_code == 422
    with session_factory() as s:
        assert s.scalars(select(Resource.id)).all() == []


def _library(session_factory) -> dict[str, tuple[int, str]]:
    with session_factory() as s:
        return {r.id: (r.version, r.title) for r in s.scalars(select(Resource))}


def test_cli_imports_yaml_and_csv_all_or_nothing(settings, session_factory, tmp_path):
    good = tmp_path / "library.yaml"
    good.write_text(
        "- id: first-reports\n  kind: article\n  title: First reports\n  url: https://help.example.com/r\n  use_cases: [analytics]\n"
        "- id: alerts-video\n  kind: video\n  title: Alerts\n  url: https://help.example.com/a\n  goals: [adoption]\n"
    )
    proc = run_cli(settings, "content", "import", str(good))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "created   first-reports" in proc.stdout and "created   alerts-video" in proc.stdout
    assert _library(session_factory) == {"first-reports": (1, "First reports"), "alerts-video": (1, "Alerts")}

    csv = tmp_path / "library.csv"
    csv.write_text(
        "id,kind,title,url,goals,use_cases,enabled\n"
        "first-reports,article,First reports (new),https://help.example.com/r,adoption; win-back,analytics,true\n"
        "webinar-1,webinar,Live webinar,https://help.example.com/w,expansion,,false\n"
    )
    proc = run_cli(settings, "content", "import", str(csv))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "updated   first-reports" in proc.stdout and "created   webinar-1" in proc.stdout
    with session_factory() as s:
        webinar = s.get(Resource, "webinar-1")
        first = s.get(Resource, "first-reports")
        assert webinar.enabled is False and webinar.goals == ["expansion"] and webinar.use_cases == []
        assert first.goals == ["adoption", "win-back"] and first.version == 2

    # One bad row: nothing is written, every problem is named by row and pointer.
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "id,kind,title,url,goals\n"
        "first-reports,article,Changed,https://help.example.com/r,adoption\n"
        "evil,article,Evil,javascript:alert(1),adoption\n"
        "first-reports,video,Twice,https://help.example.com/r2,\n"
    )
    proc = run_cli(settings, "content", "import", str(bad))
    assert proc.returncode == 2 and "2 invalid resource(s); nothing was imported" in proc.stderr
    assert "bad.csv:3" in proc.stdout and "/url: the URL must start with https://" in proc.stdout
    assert "bad.csv:4" in proc.stdout and "already used by bad.csv:2" in proc.stdout
    assert _library(session_factory)["first-reports"] == (2, "First reports (new)")

    unreadable = tmp_path / "broken.yaml"
    unreadable.write_text("- id: x\n  kind: [unclosed\n")
    proc = run_cli(settings, "content", "import", str(unreadable))
    assert proc.returncode == 2 and "not valid YAML" in proc.stdout


def test_the_starter_library_is_seeded_once_and_never_overwritten(settings, session_factory):
    with transaction(session_factory) as s:
        created = seed_starter_content(s, settings, T0)
    assert {c.removeprefix("resource ") for c in created if c.startswith("resource ")} == set(starter_resources())
    with transaction(session_factory) as s:
        s.get(Resource, "welcome-back-guide").title = "Ours now"
    with transaction(session_factory) as s:
        assert not [c for c in seed_starter_content(s, settings, T0) if c.startswith("resource ")]
    with session_factory() as s:
        assert s.get(Resource, "welcome-back-guide").title == "Ours now"
        kinds = {r.kind for r in s.scalars(select(Resource))}
        goals = {g for r in s.scalars(select(Resource)) for g in r.goals}
    assert kinds == {"article", "video", "webinar", "course", "checklist", "template"}
    assert goals == {"adoption", "win-back", "expansion", "renewal"}
