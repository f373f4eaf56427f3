"""``touchline demo``: realistic synthetic product usage for N accounts over a
simulated period, so weeks pass in seconds.

Cohorts (deterministic by ``--seed``):
- healthy: 70% of seats in use, steady;
- churning: like healthy, then its champion stops coming (45 days before the end), it opens
  P0 tickets and its buyer answers the NPS survey as a detractor (38 to 33 days before), and
  its users leave one by one from 40 days before the end until the last stops 16 days before;
- expanding: the pool of active users grows from 40% to 100% of seats, sharply in
  the last month (monthly active users up well over 50%, seat utilisation over 90%);
- onboarding: signed up in the last three weeks, only one or two users active.

Healthy and expanding accounts answer the NPS survey as promoters or passives; healthy ones
open a P2 ticket.

Contract outcomes (:func:`contract_outcomes`), each effective at the account's renewal 45 to
90 days ahead: two churning accounts in three give notice that they will not renew, expanding
accounts expand, healthy accounts renewing within 90 days renew.

Every event has a deterministic id (uuid5 of seed, account, day, sequence), so
running the demo twice adds nothing: ingest deduplicates.

Pace: the starter ``win-back`` playbook waits 4 days after its first email and 7 after
the second before it escalates to a pooled CSM, so a demo would show no churn
engagement for 11 real days. Unless ``--real-pace`` is given, the demo saves a new
version of ``win-back`` (``DEMO_PACED_WIN_BACK``, named as demo-paced) whose waits are
2 and 3 minutes and whose time-box is an hour: the same steps, rules, holdouts and
recipients, only the clock of the story is shortened. The starter file is not changed,
and a ``win-back`` someone else has edited is left alone.

Order (``main``): publish the history, wait until the ingest workers have stored all
of it (they report their position per partition in ``consumer_progress``; progress is
logged), and only then enable the starter rules. Rules enabled earlier would judge
accounts whose recent usage is still in the topic: "no login in 14 days" on healthy
accounts, no expansion at all.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from kafka import KafkaProducer
from kafka.producer.future import FutureRecordMetadata, RecordMetadata

from shared.settings import Settings

log = logging.getLogger(__name__)

SEGMENTS = {"smb": (5, 15, 6_000, 30_000), "mid_market": (15, 60, 30_000, 120_000), "enterprise": (60, 200, 120_000, 600_000)}
PLANS = {"smb": "starter", "mid_market": "pro", "enterprise": "enterprise"}
EVENTS = [
    ("login", 1.0),
    ("dashboard_viewed", 2.5),
    ("report_created", 0.6),
    ("query_run", 1.8),
    ("export_run", 0.3),
    ("alert_configured", 0.1),
    ("invite_sent", 0.05),
    ("integration_connected", 0.02),
    ("comment_added", 0.4),
    ("share_link_created", 0.2),
]
ZONES = ["Europe/London", "America/New_York", "America/Los_Angeles", "Europe/Berlin", "Asia/Tokyo", "Australia/Sydney"]
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret", "Linus", "Radia", "Donald", "Frances", "John"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Hamilton", "Torvalds", "Perlman", "Knuth"]
NAMESPACE = uuid.UUID("6f1c1f8e-5a5e-4a0b-8f7e-2c0f3b9d4a11")
# What each account bought the product for and its industry, sent as the `use_case` and
# `industry` traits of its `group` event (as a product app would): the starter segments
# are one per use case, and the starter library has a win-back resource for each
# (services/rules/segments/starter.yaml, services/outreach/starter/resources.yaml).
# Consecutive accounts differ in use case, so the churning ones (three in a row of every
# twenty) cover all three.
USE_CASES = ["analytics", "monitoring", "collaboration"]
INDUSTRIES = ["fintech", "retail", "healthcare", "media", "logistics"]


@dataclass
class DemoAccount:
    id: str
    name: str
    cohort: str
    segment: str
    seats: int
    arr: float
    signup: date
    renewal: date
    users: list[tuple[str, str, str, str]]  # (user_id, name, role, timezone)
    use_case: str = ""
    industry: str = ""


def cohort_of(i: int) -> str:
    r = i % 20
    if r < 12:
        return "healthy"
    if r < 15:
        return "churning"
    if r < 18:
        return "expanding"
    return "onboarding"


def churns_at_renewal(i: int) -> bool:
    """Two churning accounts in three give notice that they will not renew (the others renew later)."""
    return cohort_of(i) == "churning" and i % 3 != 0


def _renewal_days(cohort: str, i: int) -> tuple[int, int]:
    """How many days after the end of the history an account's renewal falls (a range to draw
    from). Contract outcomes are known within ``KNOWN_WITHIN_DAYS`` (see :func:`contract_outcomes`)
    and validation scores each ``horizon`` (90) days before its date, so outcomes due from 45 to
    90 days ahead are scored on days of the history (with at least two weeks of usage before)."""
    if churns_at_renewal(i):
        return 75, 88  # its notice (60 days or more before the renewal) came in as its users left
    if cohort == "churning":
        return KNOWN_WITHIN_DAYS + 10, 330
    if cohort == "expanding":
        return 45, 88  # it expands at its renewal
    return 45, 330


def build_accounts(n: int, seed: int, end: date, days: int) -> list[DemoAccount]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        segment = rng.choices(list(SEGMENTS), weights=[6, 3, 1])[0]
        lo, hi, arr_lo, arr_hi = SEGMENTS[segment]
        seats = rng.randint(lo, hi)
        cohort = cohort_of(i)
        signup = end - timedelta(days=rng.randint(3, 20)) if cohort == "onboarding" else end - timedelta(days=rng.randint(days, days + 400))
        renewal = end + timedelta(days=rng.randint(*_renewal_days(cohort, i)))
        if cohort == "onboarding":
            renewal = signup + timedelta(days=365)  # a year's contract from its signup
        users = []
        for u in range(seats):
            role = "champion" if u == 0 else "buyer" if u == 1 else "admin" if u == 2 else "power_user" if u < 6 else "member"
            name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
            zone = rng.choice(ZONES)
            if u == 0:
                # The champions' zones go round the world by account, so at any hour of the day
                # the tour has churning accounts whose champion is awake (their emails are not
                # held for their morning): drawn, five of eleven came from two zones and only
                # one was awake from 19:00 to 21:00 UTC. The draw is kept, so the rest is as before.
                zone = ZONES[i % len(ZONES)]
            users.append((f"u{u:03d}", name, role, zone))
        out.append(
            DemoAccount(
                id=f"acct-{i:05d}",
                name=f"{rng.choice(LAST)} {rng.choice(['Labs', 'Systems', 'Group', 'Analytics', 'Works'])} {i}",
                cohort=cohort,
                segment=segment,
                seats=seats,
                arr=float(round(rng.uniform(arr_lo, arr_hi), -2)),
                signup=signup,
                renewal=renewal,
                users=users,
                use_case=USE_CASES[(i + seed) % len(USE_CASES)],
                industry=INDUSTRIES[int(hashlib.sha256(f"{seed}/{i}/industry".encode()).hexdigest(), 16) % len(INDUSTRIES)],
            )
        )
    return out


def _activity(acct: DemoAccount, day_index: int, days: int, day: date) -> tuple[int, float]:
    """(how many of the account's users can be active, the chance each is active) on a day."""
    left = days - day_index  # days until the end of the period
    if day < acct.signup:
        return 0, 0.0
    core = max(1, round(acct.seats * 0.7))
    if acct.cohort == "healthy":
        return core, 0.6
    if acct.cohort == "churning":
        # its users leave one by one (from USERS_LEAVE_DAYS before the end), the last 16 days before it
        if left <= 16:
            return core, 0.0
        if left <= USERS_LEAVE_DAYS:
            return max(1, round(core * (left - 16) / (USERS_LEAVE_DAYS - 16))), 0.6
        return core, 0.6
    if acct.cohort == "expanding":
        # the pool of active users grows from 40% to 100% of seats, sharply in the last month
        progress = day_index / max(1, days - 1)
        return max(1, round(acct.seats * (0.4 + 0.6 * progress**2))), 0.75
    # onboarding: one or two users poke around
    return min(2, acct.seats), 0.5


# A churning account's story, in days before the end of the history: its champion stops
# coming (CHAMPION_GONE_DAYS), it opens P0 tickets (P0_TICKET_DAYS) and its buyer answers the
# NPS survey as a detractor (DETRACTOR_DAYS), then its users leave one by one
# (USERS_LEAVE_DAYS) until the last stops 16 days before the end. The early signs are the
# starter health model's champion coverage, P0 tickets and NPS (the seeds' "a P0 is a pretty
# critical indicator of a future problem"), before the usage rules see anything.
CHAMPION_GONE_DAYS = 45
P0_TICKET_DAYS = (38, 36, 34)
DETRACTOR_DAYS = 33
# The demo's NPS answers come from the product's in-app survey, sent as the same event a
# survey step's answer records (docs/surveys.md), which the starter health model reads;
# they are events only (a survey step's results read its own answers).
DEMO_NPS = {"survey_id": "in-app-nps", "scale": "nps"}
USERS_LEAVE_DAYS = 40
# The voice of the other accounts: a healthy or expanding account answers the NPS survey
# (a promoter or a passive) this many days before the end, and a healthy one opens a P2 ticket.
ANSWER_DAYS, P2_TICKET_DAYS = 20, 12


def _voice(acct: DemoAccount, left: int, day: date, rng: random.Random) -> list[dict[str, Any]]:
    """The account's support tickets and NPS answers on a day (``left`` days before the end)."""
    at = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=10)
    admin, buyer = acct.users[min(2, len(acct.users) - 1)][0], acct.users[min(1, len(acct.users) - 1)][0]
    out: list[tuple[str, str, dict[str, Any]]] = []
    if acct.cohort == "churning":
        if left in P0_TICKET_DAYS:
            out.append((admin, "ticket_opened", {"priority": "P0", "subject": "dashboards fail to load"}))
        if left == DETRACTOR_DAYS:
            out.append((buyer, "survey_answered", {**DEMO_NPS, "score": rng.randint(2, 5)}))
    elif acct.cohort in ("healthy", "expanding") and left == ANSWER_DAYS:
        score = rng.randint(9, 10) if acct.cohort == "expanding" else rng.randint(7, 10)
        out.append((buyer, "survey_answered", {**DEMO_NPS, "score": score}))
    elif acct.cohort == "healthy" and left == P2_TICKET_DAYS:
        out.append((admin, "ticket_opened", {"priority": "P2", "subject": "how do I share a dashboard?"}))
    return [
        {"account_id": acct.id, "user_id": uid, "name": name, "timestamp": at.isoformat(), "properties": {"source": "demo", **props}}
        for uid, name, props in out
    ]


def generate(
    accounts: int = 200, days: int = 60, seed: int = 7, end: datetime | None = None, with_traits: bool = True
) -> Iterator[dict[str, Any]]:
    """Yield event dicts (the public contract) in time order per account."""
    end = (end or datetime.now(UTC)).astimezone(UTC)
    start_day = (end - timedelta(days=days)).date()
    accts = build_accounts(accounts, seed, end.date(), days)
    rng = random.Random(seed + 1)
    first_ts = datetime.combine(start_day, datetime.min.time(), tzinfo=UTC)
    if with_traits:
        for a in accts:
            stage = "onboarding" if a.cohort == "onboarding" else "active"
            yield {
                "event_id": str(uuid.uuid5(NAMESPACE, f"{seed}/{a.id}/group")),
                "type": "group",
                "account_id": a.id,
                "timestamp": first_ts.isoformat(),
                "traits": {
                    "name": a.name,
                    "plan": PLANS[a.segment],
                    "arr": a.arr,
                    "seats": a.seats,
                    "segment": a.segment,
                    "lifecycle_stage": stage,
                    "renewal_date": a.renewal.isoformat(),
                    "signup_date": a.signup.isoformat(),
                    "owner_email": f"cs-pool+{a.segment}@touchline.test",
                    "demo_cohort": a.cohort,
                    "use_case": a.use_case,
                    "industry": a.industry,
                },
            }
            for uid, name, role, tz in a.users:
                yield {
                    "event_id": str(uuid.uuid5(NAMESPACE, f"{seed}/{a.id}/{uid}/identify")),
                    "type": "identify",
                    "account_id": a.id,
                    "user_id": uid,
                    "timestamp": first_ts.isoformat(),
                    "traits": {"email": f"{name.split()[0].lower()}.{uid}@{a.id}.example", "name": name, "role": role, "timezone": tz},
                }
    names = [n for n, _ in EVENTS]
    weights = [w for _, w in EVENTS]
    for d in range(days):
        day = start_day + timedelta(days=d + 1)
        for a in accts:
            seq = 0
            for extra in _voice(a, days - d, day, rng):
                seq += 1
                yield {**extra, "event_id": str(uuid.uuid5(NAMESPACE, f"{seed}/{a.id}/{day}/{seq}"))}
            pool, chance = _activity(a, d, days, day)
            if chance <= 0:
                continue
            active = [u for u in a.users[:pool] if rng.random() < chance]
            if a.cohort == "churning" and days - d <= CHAMPION_GONE_DAYS:
                active = active[1:] if active and active[0][2] == "champion" else active  # the champion went first
            for uid, _name, _role, _tz in active:
                n_events = 1 + int(rng.expovariate(1 / 4))
                for k in range(n_events):
                    ts = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(seconds=rng.randint(28_800, 64_800))
                    # Drawn and numbered before the cut at the end, so a later run the same
                    # day draws the same stream: the same events under the same ids, and
                    # only those after the earlier end are new.
                    name = "login" if k == 0 else rng.choices(names, weights)[0]
                    seq += 1
                    if ts > end:
                        continue
                    yield {
                        "event_id": str(uuid.uuid5(NAMESPACE, f"{seed}/{a.id}/{day}/{seq}")),
                        "account_id": a.id,
                        "user_id": uid,
                        "name": name,
                        "timestamp": ts.isoformat(),
                        "properties": {"source": "demo", "plan": PLANS[a.segment]},
                    }
    if with_traits:
        yield from contract_outcomes(accts, seed, end)


# Days before the end of the history that the CRM sends each contract outcome, and how far
# ahead a renewal falls for its outcome to be known already.
CHURN_NOTICE_DAYS, EXPANSION_DAYS, RENEWAL_CLOSED_DAYS, KNOWN_WITHIN_DAYS = 2, 5, 7, 90


def contract_outcomes(accts: list[DemoAccount], seed: int, end: datetime) -> Iterator[dict[str, Any]]:
    """The CRM's contract outcomes (docs/events.md, "contract"), each effective at the
    account's renewal (45 to 90 days ahead, so validation at its default 90-day horizon
    scores every one on a day of the history): two churning accounts in three give notice
    that they will not renew (churned), every expanding account buys 40% more ARR from its
    renewal (expanded), and a healthy account whose renewal falls within ``KNOWN_WITHIN_DAYS``
    has renewed at the same ARR: what health validation measures the score against."""
    for a in accts:
        ahead = (a.renewal - end.date()).days
        outcome: dict[str, Any]
        if a.cohort == "churning" and ahead <= KNOWN_WITHIN_DAYS:
            sent, outcome = end - timedelta(days=CHURN_NOTICE_DAYS), {"kind": "churned", "effective_date": a.renewal.isoformat()}
            outcome["note"] = "cancellation notice: will not renew"
        elif a.cohort == "expanding":
            sent = end - timedelta(days=EXPANSION_DAYS)
            outcome = {"kind": "expanded", "arr_after": round(a.arr * 1.4, -2), "effective_date": a.renewal.isoformat()}
        elif a.cohort == "healthy" and ahead <= KNOWN_WITHIN_DAYS:
            sent, outcome = end - timedelta(days=RENEWAL_CLOSED_DAYS), {"kind": "renewed", "arr_after": a.arr}
            outcome["effective_date"] = a.renewal.isoformat()
        else:
            continue
        yield {
            "event_id": str(uuid.uuid5(NAMESPACE, f"{seed}/{a.id}/contract/{outcome['kind']}")),
            "type": "contract",
            "account_id": a.id,
            "timestamp": sent.isoformat(),
            "properties": {"arr_before": a.arr, **outcome},
        }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--accounts", type=int, default=200, help="number of accounts (default 200)")
    parser.add_argument("--days", type=int, default=60, help="simulated days of history, ending now (default 60)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=0, help="events per second (0 = as fast as the broker takes them)")
    parser.add_argument("--no-rules", action="store_true", help="do not import and enable the starter rules")
    parser.add_argument(
        "--live",
        action="store_true",
        help="after the history, keep streaming live usage until Ctrl-C: churning accounts that get "
        "the win-back email come back more often than held-out ones, so the playbook report shows a lift",
    )
    parser.add_argument("--live-tick", type=float, default=5.0, help="seconds between live rounds (default 5)")
    parser.add_argument(
        "--real-pace",
        action="store_true",
        help="keep the starter win-back playbook's real waits (4 and 7 days before a CSM is engaged) "
        "instead of the demo pace (2 and 3 minutes, an hour's time-box)",
    )


def publish(events: Iterator[dict[str, Any]], producer: OffsetTracker, topic: str, rate: float = 0, progress_every: int = 1000) -> int:
    """Send the events; a progress bar on a terminal, a log line every few seconds otherwise."""
    from shared.progress import ProgressBar

    n = 0
    started = time.monotonic()
    with ProgressBar("demo: history sent", unit="events") as bar:
        for ev in events:
            producer.send(topic, key=ev["account_id"].encode(), value=json.dumps(ev, separators=(",", ":")).encode())
            n += 1
            if rate and n % 100 == 0:
                ahead = n / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)  # pacing a real stream, not standing in for a clock
            if n % progress_every == 0:
                bar.update(n)
        bar.update(n)
    producer.flush()
    return n


def main(args: argparse.Namespace) -> int:
    from shared.kafka.clients import ensure_topics, make_producer
    from shared.settings import get_settings

    settings = get_settings()
    ensure_topics(settings)
    seed_csm_pool(settings)
    paced = False if getattr(args, "real_pace", False) else pace_win_back(settings)
    found = save_cohorts(settings, args.accounts, args.seed, args.days, DEMO_PACED_WIN_BACK if paced else None)
    producer = make_producer(settings, linger_ms=20, batch_size=256 * 1024)
    tracked = OffsetTracker(producer)
    log.info(
        "demo: %d accounts over %d simulated days (seed %d) into %s on %s",
        args.accounts,
        args.days,
        args.seed,
        settings.topic_events,
        settings.bootstrap_servers,
    )
    started = time.monotonic()
    n = publish(generate(args.accounts, args.days, args.seed), tracked, settings.topic_events, args.rate)
    producer.close()
    log.info(
        "demo: done, %d events in %.1fs. Cohorts: 60%% healthy, 15%% churning, 15%% expanding, 10%% onboarding.",
        n,
        time.monotonic() - started,
    )
    if not getattr(args, "no_rules", False):
        wait_for_ingest(settings, tracked.end_offsets)
        score_health(settings, args.days, found)
        enable_starter_rules(settings)
        detractor_answer(settings, found, args.accounts, args.seed, args.days)
    if getattr(args, "live", False):
        live(args, settings)
    return 0


class OffsetTracker:
    """A producer wrapper that remembers, per partition, the offset after the last
    record the broker acknowledged: what ingest must have stored before the rules
    may look at the history."""

    def __init__(self, producer: KafkaProducer) -> None:
        self.producer = producer
        self.end_offsets: dict[int, int] = {}

    def _acked(self, metadata: RecordMetadata) -> None:
        # Called on the producer's I/O thread, one at a time.
        if metadata.offset + 1 > self.end_offsets.get(metadata.partition, 0):
            self.end_offsets[metadata.partition] = metadata.offset + 1

    def send(self, topic: str, **kwargs: Any) -> FutureRecordMetadata:
        return self.producer.send(topic, **kwargs).add_callback(self._acked)

    def flush(self, timeout: float | None = None) -> None:
        self.producer.flush(timeout)


class IngestStalled(SystemExit):
    pass


def wait_for_ingest(
    settings: Settings, end_offsets: dict[int, int], poll_seconds: float = 0.5, log_every: float = 5.0, stall_seconds: float = 600.0
) -> None:
    """Block until the ingest group's reported position has reached ``end_offsets`` on
    every partition, logging progress. Gives up (exit with a message) after
    ``stall_seconds`` without any progress: the rules would judge half-loaded data."""
    from shared import consumer_progress as progress
    from shared.db import database
    from shared.kafka.clients import group_id_of

    group = group_id_of(settings, "ingest")
    total = None
    last_remaining, last_change, last_log = None, time.monotonic(), 0.0
    with database(settings) as factory:
        while True:
            with factory() as session:
                positions = progress.positions(session, group, settings.topic_events)
            remaining = sum(max(0, end - positions.get(p, 0)) for p, end in end_offsets.items())
            total = remaining if total is None else total
            if remaining == 0:
                log.info("demo: ingest has stored the whole history; enabling the starter rules")
                return
            # Real time on purpose: this waits for other processes, it does not stand in for a clock.
            mono = time.monotonic()
            if remaining != last_remaining:
                last_remaining, last_change = remaining, mono
            elif mono - last_change > stall_seconds:
                raise IngestStalled(
                    f"demo: ingest made no progress for {stall_seconds:.0f}s ({remaining} records not stored); the "
                    "starter rules were NOT enabled. Is the ingest worker running (`touchline run`)? Enable them "
                    "later with `touchline rules import --enable`."
                )
            if mono - last_log >= log_every:
                last_log = mono
                log.info(
                    "demo: waiting for ingest: %s records of the history not stored yet (%s stored since the wait began)%s",
                    f"{remaining:,}",
                    f"{total - remaining:,}",
                    "" if positions else " (no ingest worker has reported yet: is `touchline run` up?)",
                )
            time.sleep(poll_seconds)


# Simulated customers' response to the win-back playbook: how likely a churning account
# comes back once it got the email, and when it was held out (the baseline).
COME_BACK_IF_REACHED = 0.6
COME_BACK_IF_HELD_OUT = 0.15


def _chance(account_id: str, salt: str) -> float:
    digest = hashlib.sha256(f"{salt}/{account_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def comes_back(account_id: str, reached: bool) -> bool:
    """Whether a churning account starts using the product again (with ``--live``) once
    the win-back reached it (``reached``) or held it out: decided by its id, so
    :func:`cohorts` knows in advance which escalations a live run takes away."""
    return _chance(account_id, "come-back") < (COME_BACK_IF_REACHED if reached else COME_BACK_IF_HELD_OUT)


def coming_back(status: dict[str, str], churning: set[str], back: dict[str, str], stays_away: set[str]) -> dict[str, str]:
    """Of the churning accounts whose win-back has decided (``status``: reached or held
    out), those that start using the product again now, with their state: by their draw
    (:func:`comes_back`), except those already back and ``stays_away`` (the tour's account)."""
    return {
        a: state
        for a, state in status.items()
        if a in churning and a not in back and state != "pending" and a not in stays_away and comes_back(a, reached=state == "reached")
    }


def live_round(accts: list[DemoAccount], back: set[str], now: datetime, rng: random.Random) -> list[dict[str, Any]]:
    """One round of live usage at ``now``: healthy, expanding and onboarding accounts keep
    using the product; churning accounts stay away unless they are in ``back``."""
    out = []
    for a in accts:
        if a.cohort == "churning" and a.id not in back:
            continue
        pool = a.users[: max(2, round(a.seats * 0.7))] if a.cohort != "onboarding" else a.users[:2]
        chance = 0.5 if a.id in back else 0.05
        for uid, _name, _role, _tz in pool:
            if rng.random() < chance:
                for name in ("login", rng.choices([n for n, _ in EVENTS], [w for _, w in EVENTS])[0]):
                    out.append(
                        {
                            "event_id": str(uuid.uuid4()),
                            "account_id": a.id,
                            "user_id": uid,
                            "name": name,
                            "timestamp": now.isoformat(),
                            "properties": {"source": "demo-live"},
                        }
                    )
    return out


def live(args: argparse.Namespace, settings: Settings) -> None:
    from services.outreach.interface import outreach_status
    from shared.db import database
    from shared.kafka.clients import make_producer

    accts = build_accounts(args.accounts, args.seed, datetime.now(UTC).date(), args.days)
    churning = {a.id for a in accts if a.cohort == "churning"}
    producer = make_producer(settings)
    rng = random.Random(args.seed + 2)
    back: dict[str, str] = {}
    # The tour's account ($ACCT, the first escalated in var/demo-cohorts.json) stays away,
    # so the tour's CSM steps find its escalation at any hour: at some hours every churning
    # account whose champion is awake would come back by its draw (comes_back).
    saved = settings.var_dir / "demo-cohorts.json"
    stays_away = set(json.loads(saved.read_text()).get("escalated_unless_they_come_back", [])[:1]) if saved.exists() else set()
    sent = 0
    log.info("demo: live usage every %.0fs; Ctrl-C stops. Watch GET /v1/playbooks/win-back/report.", args.live_tick)
    with database(settings) as factory:
        try:
            while True:
                with factory() as session:
                    status = outreach_status(session, "win-back")
                for account_id, state in coming_back(status, churning, back, stays_away).items():
                    back[account_id] = state
                    log.info("demo: %s (%s) is using the product again", account_id, state.replace("_", " "))
                events = live_round(accts, set(back), datetime.now(UTC), rng)
                for ev in events:
                    producer.send(settings.topic_events, key=ev["account_id"].encode(), value=json.dumps(ev).encode())
                producer.flush()
                sent += len(events)
                time.sleep(args.live_tick)  # pacing a live stream in real time
        except KeyboardInterrupt:
            log.info(
                "demo: live stream stopped after %d events; %d churning accounts came back (%d reached, %d held out)",
                sent,
                len(back),
                sum(1 for v in back.values() if v == "reached"),
                sum(1 for v in back.values() if v == "held_out"),
            )
        finally:
            producer.close()


def score_health(settings: Settings, days: int, found: dict[str, Any]) -> None:
    """Install the starter health model (when there is none) and score every account as
    of each day of the history, then today, so the accounts have a score history (the
    churning cohort sliding before its signal) and ``health-fell-20`` has scores two weeks
    apart. Logs the accounts by label per cohort."""
    from services.rules.interface import install_starter_health_model, latest_health, run_health_day, score_health_history
    from shared.clock import SystemClock
    from shared.db import database, transaction

    now = SystemClock().now()
    with database(settings) as factory:
        with transaction(factory) as session:
            install_starter_health_model(session, actor=DEMO_ACTOR, now=now)
        # The history's first day has no events before it; its last is yesterday.
        replay = score_health_history(factory, now, now.date() - timedelta(days=days - 1), now.date() - timedelta(days=1))
        run_health_day(factory, settings, now)  # today: the daily scoring, as `touchline health score` runs it
        with factory() as session:
            by_account = {a: r.label for a, r in latest_health(session, now.date(), now.date()).items()}
    log.info("demo: health scored over %d past days in %.1fs, and today", len(replay.scored_days), replay.seconds)
    for cohort in ("churning", "expanding", "healthy", "onboarding"):
        counts = Counter(by_account.get(a) or "unscored" for a in found[cohort])
        log.info("demo: health of the %s accounts: %s", cohort, ", ".join(f"{n} {label}" for label, n in counts.most_common()))


def enable_starter_rules(settings: Settings) -> None:
    """Import the starter rule library (services/rules/starter) and enable it, so the
    churning and expanding cohorts make signals appear while the demo runs; and add the
    starter segments (one per use case, and the new customers), whose members the next tick
    fills and sizes."""
    from services.rules.interface import STARTER_DIR, import_rules, install_starter_segments
    from shared.clock import SystemClock
    from shared.db import database, transaction
    from shared.migrate import upgrade

    with database(settings) as factory:
        upgrade(factory.kw["bind"])
        with transaction(factory) as session:
            outcomes = import_rules(
                session,
                STARTER_DIR,
                actor="cli:demo",
                now=SystemClock().now(),
                retention_days=settings.raw_event_retention_days,
                enable=True,
                max_depth=settings.max_json_depth,
            )
            segments = install_starter_segments(session, DEMO_ACTOR, SystemClock().now(), settings.raw_event_retention_days)
    log.info("demo: starter rules enabled: %s", ", ".join(f"{o.rule_id} ({o.action})" for o in outcomes))
    log.info("demo: starter segments: %s", ", ".join(segments) or "already there")


def detractor_answer(settings: Settings, found: dict[str, Any], accounts: int, seed: int, days: int) -> None:
    """Once the rules are on: the ``nps_detractor`` account's buyer answers the in-app NPS
    survey (``DEMO_NPS``) with a 3, today, as the product would send it. The starter rule
    ``nps-detractor`` fires on it and the starter playbook of that name opens a
    ``recover_usage`` engagement titled "NPS detractor" for a pooled CSM. Its event id is
    the day's, so running the demo again the same day adds nothing."""
    from shared.kafka.clients import make_producer

    if not found["nps_detractor"]:
        return
    [acct] = [a for a in build_accounts(accounts, seed, datetime.now(UTC).date(), days) if a.id == found["nps_detractor"][0]]
    now = datetime.now(UTC)
    event = {
        "event_id": str(uuid.uuid5(NAMESPACE, f"{seed}/{acct.id}/{now.date()}/nps-detractor")),
        "account_id": acct.id,
        "user_id": acct.users[1][0],
        "name": "survey_answered",
        "timestamp": now.isoformat(),
        "properties": {"source": "demo-live", **DEMO_NPS, "score": 3, "comment": "Dashboards time out every morning."},
    }
    producer = make_producer(settings)
    try:
        producer.send(settings.topic_events, key=acct.id.encode(), value=json.dumps(event).encode())
        producer.flush()
    finally:
        producer.close()
    log.info("demo: %s's buyer (%s) answered the NPS survey with 3: a detractor; watch its engagement open", acct.id, acct.users[1][0])


# The starter win-back playbook (services/outreach/starter/playbooks.yaml) with its waits
# and time-box shortened so the escalation happens while someone watches the demo.
# Everything else (trigger, holdouts, exit condition, recipients, templates, the recommend
# step) is the starter's, so the demo shows what production does, only faster.
LOGGED_IN_AGAIN = {"metric": "count", "event": "login", "window": "7d", "op": ">=", "value": 3}
CLICKED = {"metric": "count", "event": "link_clicked", "window": "7d", "op": ">=", "value": 1}
DEMO_PACED_WIN_BACK = {
    "name": "Win back silent accounts (demo pace: waits of minutes, not days)",
    "description": "Saved by `touchline demo`: the starter win-back playbook with its 4- and 7-day waits shortened "
    "to 2 and 3 minutes and the CSM's time-box from 30 days to 1 hour. Production uses the starter's "
    "pace; `touchline demo --real-pace` keeps it.",
    "trigger": {"rules": ["no-login-14d"], "kinds": ["churn_risk"]},
    "holdout_percent": 20,
    "exit_condition": {"any": [LOGGED_IN_AGAIN, CLICKED]},
    "steps": [
        {
            "id": "win-back-email",
            "type": "recommend",
            "channel": "email",
            "template": "win-back-pick",
            "to": ["champion", "admin"],
            "fallback": "welcome-back-guide",
        },
        {"id": "wait-2m", "type": "wait", "duration": "2m"},
        {
            "id": "back-yet",
            "type": "branch",
            "if": {"any": [LOGGED_IN_AGAIN, CLICKED]},
            "then": "convert",
            "else": "owner-email",
        },
        {"id": "owner-email", "type": "send", "channel": "email", "template": "win-back-owner-brief", "to": ["owner"]},
        {"id": "wait-3m", "type": "wait", "duration": "3m"},
        {
            "id": "escalate",
            "type": "open_engagement",
            "goal": "recover_usage",
            "time_box": "1h",
            "holdout_percent": 10,
            "wait_for_outcome": True,
            "on_outcome": {"recovered": "convert", "default": "end"},
        },
    ],
}
DEMO_ACTOR = "cli:demo"


def pace_win_back(settings: Settings) -> bool:
    """Save ``DEMO_PACED_WIN_BACK`` as the current version of ``win-back`` (the starter
    content is seeded first if missing), unless its current version was written by
    someone other than the starter or the demo. Returns whether the demo pace is on."""
    from services.outreach import interface as outreach
    from shared.clock import SystemClock
    from shared.db import database, transaction
    from shared.migrate import upgrade

    with database(settings) as factory:
        upgrade(factory.kw["bind"])
        now = SystemClock().now()
        with transaction(factory) as session:
            outreach.seed_starter_content(session, settings, now, enable_playbooks=True)
            head = outreach.get_playbook_head(session, "win-back")
            current = outreach.get_playbook_version(session, "win-back", head.current_version) if head else None
            if current is not None and current.created_by not in (outreach.STARTER_ACTOR, DEMO_ACTOR):
                log.warning(
                    "demo: win-back was last changed by %s; leaving it as it is, so churn escalations come at "
                    "its own pace (the starter's: 11 days)",
                    current.created_by,
                )
                return False
            definition = outreach.PlaybookDefinition.model_validate({**DEMO_PACED_WIN_BACK, "enabled": head.enabled if head else True})
            outreach.save_playbook(session, "win-back", definition, actor=DEMO_ACTOR, now=now)
    log.info(
        "demo: win-back runs at demo pace (waits of 2 and 3 minutes, an hour's time-box): a churning account that "
        "ignores both emails is escalated to a pooled CSM about 5 minutes after its signal (emails inside a "
        "contact's quiet hours wait for their morning, and so does the escalation)"
    )
    return True


def cohorts(
    accounts: int, seed: int, days: int, win_back: dict[str, Any], settings: Settings | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Which accounts the demo made churning, expanding, healthy and onboarding, and of
    the churning ones (the win-back playbook's accounts) which it holds out of the
    emails, which it holds out of the escalation (a ``held_out`` engagement row, measured,
    not escalated) and which it escalates to a pooled CSM if they ignore both emails.
    Then the accounts of the content scenes (:func:`scenes`) and each account's use case.
    Whose champion is awake is decided at ``now`` (default: the clock's)."""
    from services.outreach.interface import holdout_groups

    now = now or datetime.now(UTC)
    accts = build_accounts(accounts, seed, now.date(), days)
    out: dict[str, Any] = {c: [a.id for a in accts if a.cohort == c] for c in ("churning", "expanding", "healthy", "onboarding")}
    groups = holdout_groups("win-back", win_back, out["churning"])
    out["win_back_message_holdout"] = groups["message_holdout"]
    out["win_back_escalation_holdout"] = groups["escalation_holdout"]
    held = set(groups["message_holdout"]) | set(groups["escalation_holdout"])
    # Those whose champion is awake now first, and of those, the ones that stay away under
    # --live (the order is otherwise the accounts'): the tour's account ($ACCT, the first)
    # is then escalated minutes after its signal at any hour. Its champion's quiet hours
    # would hold the tour back by up to eleven hours, past the one-hour time-box of every
    # engagement opened meanwhile. One that comes back converts within a minute of its
    # email and is never escalated (the tour's CSM steps would find no engagement): at
    # hours when every awake one would by its draw, --live keeps the first away (live()).
    by_id = {a.id: a for a in accts}
    escalated = [a for a in out["churning"] if a not in held]
    out["escalated_unless_they_come_back"] = sorted(
        escalated, key=lambda a: (not _awake(by_id[a], settings, now), comes_back(a, reached=True))
    )
    out.update(scenes(accts, out, settings, now))
    out["use_cases"] = {a.id: a.use_case for a in accts}
    return out


def _awake(acct: DemoAccount, settings: Settings | None, now: datetime, hours: int = 2) -> bool:
    """Whether the account's champion is outside the contact gate's quiet hours from ``now``
    for ``hours`` (their win-back email goes out at once, not in their morning)."""
    from services.outreach.interface import quiet_until

    if settings is None:
        return True
    return all(quiet_until(acct.users[0][3], now + timedelta(hours=h), settings) is None for h in range(hours + 1))


def scenes(accts: list[DemoAccount], found: dict[str, Any], settings: Settings | None, now: datetime) -> dict[str, Any]:
    """The accounts of the content scenes, so the tour names them from this run:

    - ``resource_scene``: two churning accounts the win-back reaches (not held out of its
      email) with different use cases, those with their champion awake now first (their
      email is not held for their morning); the first is not the tour's escalated account
      (``$ACCT``) when another is awake, so a click on its email converts its enrolment
      without taking the escalation away. At some hours only one reached champion is
      awake (19:00-21:00 UTC with the default seed: Los Angeles only): the second's email
      then waits queued for its morning, its resource already chosen, which the tour shows.
    - ``nps_detractor``: a healthy account whose buyer answers the in-app NPS survey as a
      detractor once the rules are on (:func:`detractor_answer`): the starter
      ``nps-detractor`` rule and playbook open an engagement for a pooled CSM."""
    by_id = {a.id: a for a in accts}
    reached = [a for a in found["churning"] if a not in set(found["win_back_message_holdout"])]
    first_escalated = (found["escalated_unless_they_come_back"] or [None])[0]
    ordered = sorted(reached, key=lambda a: (not _awake(by_id[a], settings, now), a == first_escalated))
    pair: list[str] = []
    for a in ordered:
        if all(by_id[a].use_case != by_id[b].use_case for b in pair):
            pair.append(a)
        if len(pair) == 2:
            break
    healthy = [a for a in found["healthy"] if len(by_id[a].users) > 1]
    return {"resource_scene": pair, "nps_detractor": healthy[:1]}


def save_cohorts(settings: Settings, accounts: int, seed: int, days: int, win_back: dict[str, Any] | None) -> dict[str, Any]:
    """Write :func:`cohorts` to ``var/demo-cohorts.json`` and log the gist, so the tour
    (README) names accounts from what this run made, never from memory."""
    from services.outreach.interface import starter_playbooks

    found = cohorts(accounts, seed, days, win_back or starter_playbooks()["win-back"], settings)
    path = settings.var_dir / "demo-cohorts.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(found, indent=1) + "\n")
    log.info(
        "demo: cohorts in %s: %d churning (%d held out of the win-back emails, %d of the escalation; e.g. %s is "
        "escalated unless it comes back), %d expanding, %d healthy, %d onboarding",
        path,
        len(found["churning"]),
        len(found["win_back_message_holdout"]),
        len(found["win_back_escalation_holdout"]),
        (found["escalated_unless_they_come_back"] or ["none"])[0],
        len(found["expanding"]),
        len(found["healthy"]),
        len(found["onboarding"]),
    )
    log.info(
        "demo: content scenes: %s (churning, use cases %s) get different resources in their win-back email; "
        "%s's buyer answers the NPS survey as a detractor",
        " and ".join(found["resource_scene"]) or "none",
        " and ".join(found["use_cases"][a] for a in found["resource_scene"]) or "none",
        (found["nps_detractor"] or ["no account"])[0],
    )
    return found


DEMO_CSMS = [
    ("grace", "Grace Hopper", "Europe/London", 8, ["smb", "mid_market"], []),
    ("ken", "Ken Thompson", "America/New_York", 8, [], ["discover_expansion", "recover_usage"]),
    ("radia", "Radia Perlman", "America/Los_Angeles", 6, ["enterprise", "mid_market"], []),
    ("linus", "Linus Torvalds", "Europe/Berlin", 6, [], ["onboarding_rescue", "recover_usage", "custom"]),
]


def seed_csm_pool(settings: Settings) -> dict[str, str]:
    """Put a small pool of CSMs on the roster (once) and give each a csm key, saved in
    ``var/demo-csm-keys.json`` (mode 0600) so `GET /v1/me/engagements` can be tried
    as each of them. Returns csm id -> key (only the keys created now)."""
    from services.outreach import interface as outreach
    from shared.auth import create_key
    from shared.clock import SystemClock
    from shared.db import database, transaction
    from shared.migrate import upgrade

    path = settings.var_dir / "demo-csm-keys.json"
    saved: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    created: dict[str, str] = {}
    with database(settings) as factory:
        upgrade(factory.kw["bind"])
        now = SystemClock().now()
        with transaction(factory) as session:
            for cid, name, tz, capacity, segments, skills in DEMO_CSMS:
                if outreach.get_csm(session, cid) is None:
                    outreach.put_csm(
                        session,
                        cid,
                        outreach.CsmIn(
                            name=name, email=f"{cid}@touchline.example", timezone=tz, capacity=capacity, segments=segments, skills=skills
                        ),
                        actor="cli:demo",
                        now=now,
                        settings=settings,
                    )
                if cid not in saved:
                    _row, key = create_key(session, role="csm", name=f"demo {cid}", now=now, csm_id=cid)
                    created[cid] = key
    if created:
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**saved, **created}, indent=2))
        path.chmod(0o600)
    log.info("demo: CSM pool %s; their csm keys are in %s (try GET /v1/me/engagements with one)", ", ".join(c[0] for c in DEMO_CSMS), path)
    return created
