"""Validation of the health model against contract outcomes (docs/health.md,
"Validation"): does the score, as it stood ``horizon`` days before each recorded
contract outcome, tell the accounts that churned from those that stayed?

For every contract outcome effective in the period, the account is scored as of the end
of the UTC day ``horizon_days`` before its effective date, by replaying history as a
backtest does (:class:`~services.rules.evaluation.engine.Measurements` with ``as_of``:
the rollups as they stood that day; one measurement of each operand per scoring day for
the accounts scored that day). A ``churned`` contract outcome is a positive, any other
(renewed, expanded, contracted) a negative. The report:

- the churn rate per label and per 20-point band of the score, each with its Wilson 95%
  interval;
- the ROC AUC of the score for churn: the probability that a churned account scored
  *lower* than one that stayed, ties counting half (Mann-Whitney); 1.0 separates
  perfectly, 0.5 is a coin, 0.0 is perfectly backwards;
- per component, the AUC without it (its weight set to 0; the values are not measured
  again) and what it adds (the AUC minus that);
- with a candidate model, the same for the current version and the difference.

Pure arithmetic over the measured values (:func:`report`) is separate from the replay
(:func:`replay`), so a test can check the statistics on a constructed world."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic import Field as Param
from sqlalchemy.orm import Session

from services.ingest import interface as ingest
from services.rules.backtest.service import reads_raw_events
from services.rules.evaluation.engine import Measurements
from services.rules.health import service as health
from services.rules.language.ast import Field, Metric
from services.rules.language.health import HealthModel
from services.rules.language.parser import RuleValidationError
from shared.errors import NotFound, Unprocessable
from shared.settings import Settings
from shared.stats import roc_auc, wilson

KIND = "health.validation"
DEFAULT_HORIZON_DAYS = 90
DEFAULT_PERIOD_DAYS = 365
MAX_PERIOD_DAYS = 3660
BAND_WIDTH = 20  # the score bands of the report: [0, 20), [20, 40), ... [80, 100]
EARLIEST = date(2000, 1, 1)  # no contract outcome before it is measured (and no date arithmetic leaves the calendar)
LISTED = 1000  # scored contract outcomes listed in the result


class ValidationIn(BaseModel):
    """A validation request (``POST /v1/health/validation``)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"horizon_days": 90}, {"horizon_days": 60, "start": "2026-01-01", "model": {"components": ["..."]}}]
        },
    )

    horizon_days: int = Param(
        DEFAULT_HORIZON_DAYS, ge=1, le=730, description="score each account this many days before its contract outcome"
    )
    start: date | None = Param(
        None, ge=EARLIEST, description="first effective date of the contract outcomes measured (default: a year before end)"
    )
    end: date | None = Param(
        None, ge=EARLIEST, description="last effective date (default and at most: today + horizon_days, whose scoring day is today)"
    )
    model: dict[str, Any] | None = Param(
        None,
        description="a candidate model to validate before saving it; it is compared with the current version (without: the current version)",
    )


@dataclass(frozen=True)
class Sample:
    """One contract outcome and the account's score before it."""

    account_id: str
    event_id: str
    kind: str
    effective_date: date
    scored_on: date
    values: dict[Metric | Field, Any]  # each measure of the models -> its value
    segment: str | None
    stage: str | None

    @property
    def churned(self) -> bool:
        return self.kind == "churned"


@dataclass(frozen=True)
class Prepared:
    body: ValidationIn
    start: date
    end: date
    candidate: HealthModel
    candidate_version: int | None  # the current version's number when no candidate was given
    current: HealthModel | None  # with a candidate: the current version, if any
    current_version: int | None


def prepare(session: Session, body: ValidationIn, settings: Settings, today: date) -> Prepared:
    """Check a request and parse the models (cheap): the API does it before it queues the
    job, so a bad request is a 422 (or a 404 without any model) at once."""
    # A contract outcome is measured once its scoring day has come: one effective up to
    # horizon_days ahead (a cancellation notice before the renewal) is scored today or before.
    last = today + timedelta(days=body.horizon_days)
    end = body.end or last
    start = body.start or today - timedelta(days=DEFAULT_PERIOD_DAYS - 1)
    problems = []
    if end > last:
        problems.append(
            {
                "pointer": "/end",
                "message": f"end {end} is more than horizon_days ({body.horizon_days}) after today ({today}): "
                f"contract outcomes effective after {last} have no score {body.horizon_days} days before them yet",
            }
        )
    if start > end:
        problems.append({"pointer": "/start", "message": f"start {start} is after end {end}; swap them"})
    elif (end - start).days + 1 > MAX_PERIOD_DAYS:
        problems.append({"pointer": "/start", "message": f"a period of {(end - start).days + 1} days; ask for at most {MAX_PERIOD_DAYS}"})
    if problems:
        raise Unprocessable(problems)
    cur = health.current(session)
    if body.model is not None:
        try:
            candidate = health.parse(body.model, settings.raw_event_retention_days)
        except RuleValidationError as exc:
            raise RuleValidationError([{**e, "pointer": "/model" + e["pointer"]} for e in exc.errors]) from None
        return Prepared(body, start, end, candidate, None, cur.model if cur else None, cur.version if cur else None)
    if cur is None:
        raise NotFound('no health model yet: define one with PUT /v1/health/model, or send a candidate as "model"')
    return Prepared(body, start, end, cur.model, cur.version, None, None)


def _end_of(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), dtime.min, tzinfo=UTC) - timedelta(microseconds=1)


def replay(
    session: Session,
    models: list[HealthModel],
    start: date,
    end: date,
    horizon_days: int,
    *,
    lookback_days: int = 400,
    progress: Callable[[int, int], None] | None = None,
) -> list[Sample]:
    """Each contract outcome effective from ``start`` to ``end`` with the values of every
    component of ``models`` for its account as of ``horizon_days`` before it."""
    outcomes = ingest.contract_outcomes_between(session, start, end)
    by_day: dict[date, list[Any]] = {}
    for o in outcomes:
        by_day.setdefault(o.effective_date - timedelta(days=horizon_days), []).append(o)
    measures = list(dict.fromkeys(c.measure for m in models for c in m.components))
    samples: list[Sample] = []
    days = sorted(by_day)
    for i, day in enumerate(days):
        accounts = sorted({o.account_id for o in by_day[day]})
        meas = Measurements(session, _end_of(day), accounts, as_of=True, lookback_days=lookback_days)
        rows = meas.rows(with_traits=any(m.label.startswith("account.traits.") for m in measures))
        measured = {m: meas.metric(m) if isinstance(m, Metric) else (meas.account_field(m), None) for m in measures}
        for o in by_day[day]:
            r = rows.get(o.account_id)
            values = {m: vals.get(o.account_id, default) for m, (vals, default) in measured.items()}
            samples.append(
                Sample(
                    o.account_id,
                    o.event_id,
                    o.kind,
                    o.effective_date,
                    day,
                    values,
                    r.segment if r is not None else None,
                    r.lifecycle_stage if r is not None else None,
                )
            )
        if progress:
            progress(i + 1, len(days))
    return samples


def _rate(churned: int, n: int) -> dict[str, Any]:
    lo, hi = wilson(churned, n)
    return {
        "outcomes": n,
        "churned": churned,
        "churn_rate": round(churned / n, 4) if n else None,
        "ci95": [round(lo, 4), round(hi, 4)] if n else None,
    }


def _auc(scored: list[tuple[float, bool]]) -> float | None:
    """The AUC of the score for churn: a lower score should mean churn, so the risk
    ranked is ``-score``."""
    auc = roc_auc([-s for s, churned in scored if churned], [-s for s, churned in scored if not churned])
    return None if auc is None else round(auc, 4)


def _score(model: HealthModel, s: Sample) -> dict[str, Any]:
    return model.score({c.id: s.values.get(c.measure) for c in model.components}, s.segment, s.stage)


def _without(model: HealthModel, component_id: str) -> HealthModel:
    """``model`` with one component's weight at 0, in overrides too (left out of every mean)."""
    comps = tuple(replace(c, scoring=replace(c.scoring, weight=0.0)) if c.id == component_id else c for c in model.components)
    scorings = {k: (replace(v, weight=0.0) if k[1] == component_id else v) for k, v in model._scorings.items()}
    return replace(model, components=comps, _scorings=scorings)


def report(model: HealthModel, samples: list[Sample]) -> dict[str, Any]:
    """The validation report of ``model`` over the replayed samples (pure)."""
    scored: list[tuple[Sample, float, str]] = []
    for s in samples:
        result = _score(model, s)
        if result["score"] is not None:
            scored.append((s, result["score"], result["label"]))
    pairs = [(score, s.churned) for s, score, _ in scored]
    auc = _auc(pairs)
    labels = []
    for label in ("healthy", "watch", "at_risk"):
        group = [s for s, _, lab in scored if lab == label]
        labels.append({"label": label, **_rate(sum(s.churned for s in group), len(group))})
    bands = []
    for lower in range(0, 100, BAND_WIDTH):
        upper = lower + BAND_WIDTH
        group = [s for s, score, _ in scored if lower <= score < upper or (upper == 100 and score == 100)]
        bands.append({"from": lower, "to": upper, **_rate(sum(s.churned for s in group), len(group))})
    components = []
    for c in model.components:
        reduced = _without(model, c.id)
        without = _auc([(r["score"], s.churned) for s in samples if (r := _score(reduced, s))["score"] is not None])
        components.append(
            {"id": c.id, "auc_without": without, "adds": round(auc - without, 4) if auc is not None and without is not None else None}
        )
    churned = sum(s.churned for s, _, _ in scored)
    return {
        "outcomes": len(samples),
        "scored": len(scored),
        "unscored": len(samples) - len(scored),
        "churned": churned,
        "stayed": len(scored) - churned,
        "churn_rate": _rate(churned, len(scored)),
        "auc": auc,
        "by_label": labels,
        "by_band": bands,
        "components": components,
        "samples": [
            {
                "account_id": s.account_id,
                "event_id": s.event_id,
                "kind": s.kind,
                "effective_date": s.effective_date.isoformat(),
                "scored_on": s.scored_on.isoformat(),
                "score": score,
                "label": label,
            }
            for s, score, label in scored[:LISTED]
        ],
    }


def _model_diff(candidate: HealthModel, current: HealthModel) -> dict[str, Any]:
    """How the candidate's definition differs from the current version's: top-level
    fields, and components added, removed or changed (by id)."""
    cand, cur = candidate.to_dict(), current.to_dict()
    cand_c = {c["id"]: c for c in cand.get("components", [])}
    cur_c = {c["id"]: c for c in cur.get("components", [])}
    return {
        "changed_fields": sorted(k for k in set(cand) | set(cur) if cand.get(k) != cur.get(k)),
        "components_added": sorted(cand_c.keys() - cur_c.keys()),
        "components_removed": sorted(cur_c.keys() - cand_c.keys()),
        "components_changed": sorted(k for k in cand_c.keys() & cur_c.keys() if cand_c[k] != cur_c[k]),
    }


def _diff(candidate: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    def delta(a: float | None, b: float | None) -> float | None:
        return round(a - b, 4) if a is not None and b is not None else None

    cur_labels = {c["event_id"]: c for c in current["samples"]}
    relabelled = sum(1 for s in candidate["samples"] if (c := cur_labels.get(s["event_id"])) is not None and c["label"] != s["label"])
    return {
        "auc": delta(candidate["auc"], current["auc"]),
        "by_label": [
            {"label": a["label"], "outcomes": a["outcomes"] - b["outcomes"], "churn_rate": delta(a["churn_rate"], b["churn_rate"])}
            for a, b in zip(candidate["by_label"], current["by_label"], strict=True)
        ],
        "relabelled": relabelled,
    }


def caveats(model: HealthModel, start: date, horizon_days: int, today: date, retention_days: int) -> list[str]:
    """What the replay cannot answer exactly: metrics that read raw events (pruned after
    ``retention_days``) whose windows reach past them, and account fields and roles read as
    they are today."""
    out = []
    oldest = today - timedelta(days=retention_days - 1)
    first_scored = start - timedelta(days=horizon_days)
    for c in model.components:
        m = c.measure
        if isinstance(m, Metric) and reads_raw_events(m) and first_scored - timedelta(days=(m.window or retention_days) - 1) < oldest:
            out.append(
                f"{c.id}: {m.label} reads raw events, kept {retention_days} days (TOUCHLINE_RAW_EVENT_RETENTION_DAYS): "
                f"scores before {(oldest + timedelta(days=(m.window or retention_days) - 1)).isoformat()} miss some of them"
            )
        elif not isinstance(m, Metric):
            out.append(f"{c.id}: {m.label} is read from the account as it is today (the store keeps no history of it)")
    return out


def validate(
    session: Session, prep: Prepared, settings: Settings, today: date, progress: Callable[[int, int, str], None] | None = None
) -> dict[str, Any]:
    """Replay and report (the job's work); with a candidate and a current version, both
    and their difference."""
    started = time.perf_counter()
    models = [prep.candidate] + ([prep.current] if prep.current is not None else [])

    def on_day(done: int, total: int) -> None:
        if progress:
            progress(done, total, f"scoring day {done}/{total}")

    samples = replay(
        session, models, prep.start, prep.end, prep.body.horizon_days, lookback_days=settings.raw_event_retention_days, progress=on_day
    )
    out: dict[str, Any] = {
        "horizon_days": prep.body.horizon_days,
        "start": prep.start.isoformat(),
        "end": prep.end.isoformat(),
        "model_version": prep.candidate_version,
        "candidate": prep.body.model is not None,
        **report(prep.candidate, samples),
        "caveats": caveats(prep.candidate, prep.start, prep.body.horizon_days, today, settings.raw_event_retention_days),
    }
    if prep.current is not None:
        current = report(prep.current, samples)
        out["compared_with"] = {
            "version": prep.current_version,
            **{k: current[k] for k in ("scored", "auc", "by_label", "by_band", "components")},
        }
        out["diff"] = {**_diff(out, current), "model": _model_diff(prep.candidate, prep.current)}
    out["elapsed_seconds"] = round(time.perf_counter() - started, 3)
    return out
