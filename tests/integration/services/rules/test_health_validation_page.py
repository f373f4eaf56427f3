"""The health model page's validation (issue 21, item 6; docs/health.md, "Validation"), on
both databases, without a browser: CS Ops queue a validation from the page (CSRF-checked),
the job page shows it queued, and once the jobs worker has run it both the job page and
the model page draw the churn rate per band with its 95% interval and the AUC, with a data
table beside the chart whose every number is the API's (the constructed world of test_health_validation.py, whose figures are worked
out by hand there). Here rather than under tests/integration/services/console: it needs a
database of its own, not the console tests' shared world."""

from __future__ import annotations

import re
from html import unescape

from tests.integration.services.rules.test_health_validation import AUC, EFFECTIVE, MODEL, WORLD, record, seed
from tests.support.console import csrf_of, sign_in
from tests.support.helpers import auth, run_jobs

ROW = re.compile(
    r'<tr data-group="([^"]*)" data-outcomes="(\d+)" data-churned="(\d+)" data-rate="([^"]*)" data-low="([^"]*)" data-high="([^"]*)">'
    r"<th[^>]*>(.*?)</th><td[^>]*>([^<]*)</td><td[^>]*>([^<]*)</td><td[^>]*>([^<]*)</td><td>([^<]*)</td></tr>"
)


def table(html: str, table_id: str) -> list[dict]:
    """The rows of the data table ``table_id``: its data attributes and the text shown."""
    start = html.index(f'id="{table_id}"')
    body = html[start : html.index("</table>", start)]
    out = []
    for group, n, churned, rate, low, high, _name, n_text, churned_text, rate_text, ci_text in ROW.findall(body):
        out.append(
            {
                "group": unescape(group),
                "outcomes": int(n),
                "churned": int(churned),
                "rate": float(rate) if rate else None,
                "ci95": [float(low), float(high)] if low else None,
                "shown": (n_text, churned_text, rate_text, unescape(ci_text)),
            }
        )
    return out


def pct(v: float | None) -> str:
    return "—" if v is None else f"{v * 100:.1f}%"


def expected(groups: list[dict], name) -> list[dict]:
    """The API's groups as the table shows them."""
    return [
        {
            "group": name(g),
            "outcomes": g["outcomes"],
            "churned": g["churned"],
            "rate": g["churn_rate"],
            "ci95": g["ci95"],
            "shown": (
                str(g["outcomes"]),
                str(g["churned"]),
                pct(g["churn_rate"]),
                "—" if g["ci95"] is None else f"{pct(g['ci95'][0])} to {pct(g['ci95'][1])}",
            ),
        }
        for g in groups
    ]


def band_name(b: dict) -> str:
    return f"{b['from']} to {'under ' if b['to'] < 100 else ''}{b['to']}"


async def test_the_model_page_draws_the_validation_with_the_apis_numbers(api, keys, session_factory, settings, clock):
    ops = auth(keys["ops"])
    seed(session_factory)
    assert (await api.put("/v1/health/model", json=MODEL, headers=ops)).status_code == 200
    for a, (_logins, kind) in WORLD.items():
        await record(api, ops, a, kind, EFFECTIVE)
    await sign_in(api, keys["ops"])
    page = await api.get("/console/health")
    assert page.status_code == 200 and "Not validated yet" in page.text and 'id="validation-bands"' not in page.text

    form = {"csrf": csrf_of(page.text), "horizon_days": "90"}
    assert (await api.post("/console/health/validate", data={"horizon_days": "90"})).status_code == 403  # no CSRF token
    assert (await api.post("/console/health/validate", data={**form, "horizon_days": "0"})).status_code == 422
    r = await api.post("/console/health/validate", data=form)
    assert r.status_code == 303, r.text
    job_page = r.headers["location"]
    job_id = int(job_page.rsplit("/", 1)[1])
    queued = await api.get(job_page)
    assert 'id="job-state"' in queued.text and "queued" in queued.text and 'http-equiv="refresh"' in queued.text

    assert run_jobs(settings, session_factory, clock) == 1
    job = (await api.get(f"/v1/jobs/{job_id}", headers=ops)).json()
    assert job["state"] == "succeeded" and job["kind"] == "health.validation"
    result = job["result"]
    assert result["auc"] == AUC and result["scored"] == 5  # the world's figures, by hand in the rules test
    for path in (job_page, "/console/health"):
        html = (await api.get(path)).text
        assert 'http-equiv="refresh"' not in html, path
        assert f'id="auc">{result["auc"]}</span>' in html and f'id="scored">{result["scored"]}</span>' in html
        assert f'id="churned">{result["churned"]}</span>' in html and f'id="stayed">{result["stayed"]}</span>' in html
        assert f"Churn rate per health band with 95% intervals (AUC {result['auc']:g})" in html
        assert table(html, "validation-bands") == expected(result["by_band"], band_name), path
        assert table(html, "validation-labels") == expected(result["by_label"], lambda g: g["label"]), path
        # The chart draws one row per band, an interval for each band with outcomes.
        chart = html[html.index('<svg class="chart"') : html.index("</svg>", html.index('<svg class="chart"'))]
        assert chart.count("<circle") == sum(1 for b in result["by_band"] if b["outcomes"])
    assert f'href="/console/health/validations/{job_id}"' in html  # the model page links its latest validation

    # A CSM sees neither the validation nor can queue one (CS Ops' pages answer a readable 403).
    api.cookies.clear()
    await sign_in(api, keys["csm"])
    assert (await api.get(job_page)).status_code == 403
    accounts = await api.get("/console/accounts")
    assert accounts.status_code == 200
    r = await api.post("/console/health/validate", data={"csrf": csrf_of(accounts.text), "horizon_days": "90"})
    assert r.status_code == 403
