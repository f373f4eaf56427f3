"""The ``touchline`` command (wiring): run the system, run one component, manage keys, stream the demo."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import yaml
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from services.wiring.supervisor import Supervisor, child_specs, multiprocess_env
from services.wiring.workers import load_worker
from shared import deadletters
from shared.broker import BrokerError, EmbeddedBroker
from shared.clock import SystemClock
from shared.collector import freeze_startup_heap
from shared.db import database, read_transaction, transaction
from shared.events import event_json_schema
from shared.limits import yaml_load
from shared.logging import configure_logging
from shared.progress import ProgressBar
from shared.settings import Settings, get_settings

if TYPE_CHECKING:  # annotations only: the commands import what they use when they run
    from sqlalchemy.orm import Session, sessionmaker

    from shared.jobs import Job

log = logging.getLogger("touchline")

# The imports inside the commands below are lazy on purpose; the cheap ones are above.
# - prometheus_client picks its mode when it is first imported: `touchline run` sets
#   PROMETHEUS_MULTIPROC_DIR first (cmd_run), so nothing that imports shared.metrics may be
#   imported at module level (the app, the server, shared.auth, the services' interfaces,
#   services.jobs all do).
# - Start-up time: each command loads only what it uses. Imported at module level, the
#   app, alembic (shared.migrate), kafka-python (shared.kafka), FastAPI (shared.errors),
#   shared.jobs and the services' interfaces cost about 0.1 to 1.4 s each on this machine,
#   on every command and every child process `touchline run` starts.
# - services.demo may be absent from an install (_demo_args).


def cmd_migrate(args: argparse.Namespace) -> int:
    from shared.migrate import upgrade

    settings = get_settings()
    with database(settings) as factory:
        upgrade(factory.kw["bind"])
    log.info("database at %s is at the latest migration", _safe_url(settings.sqlalchemy_url))
    return 0


def _safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def cmd_api(args: argparse.Namespace) -> int:
    from services.wiring.app import create_app
    from services.wiring.server import make_server, raise_file_limit

    settings = get_settings()
    if not _secret_ready(settings):
        return 2
    _report_restarts("api")
    app = create_app(settings)
    if settings.metrics_port:
        from prometheus_client import start_http_server

        from shared.metrics import metrics_registry

        start_http_server(settings.metrics_port, addr=settings.api_host, registry=metrics_registry())
        log.info("metrics on http://%s:%d/metrics (not on the API port)", settings.api_host, settings.metrics_port)
    raise_file_limit(settings)
    make_server(app, settings, args.host or settings.api_host, args.port or settings.api_port, log_level=settings.log_level.lower()).run()
    return 0


def _secret_ready(settings: Settings) -> bool:
    """Resolve the secret before serving anything (``touchline run`` before its children
    start, so they all read the one it generated); False, said why, if it is unusable."""
    try:
        _ = settings.secret
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return False
    return True


def cmd_worker(args: argparse.Namespace) -> int:
    from shared.kafka.clients import ensure_topics

    settings = get_settings()
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=settings.api_host)
    _report_restarts(f"worker-{args.name}")
    worker_cls = load_worker(args.name)
    ensure_topics(settings)
    with database(settings) as factory:
        worker = worker_cls(settings, factory)

        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("%s worker: %s received, finishing the current batch", args.name, signal.Signals(signum).name)
            worker.stop_event.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        freeze_startup_heap()
        worker.run()
    return 0


def _report_restarts(process: str) -> None:
    """``touchline run`` passes how often it restarted this process; export it."""
    restarts = os.environ.get("TOUCHLINE_RESTARTS")
    if restarts:
        from shared.metrics import PROCESS_RESTARTS

        PROCESS_RESTARTS.labels(process).set(int(restarts))


def cmd_keys(args: argparse.Namespace) -> int:
    from shared import auth

    with database() as factory:
        with transaction(factory) as session:
            if args.keys_cmd == "create":
                if args.role == "csm" and args.csm_id:  # as console-link and the console's key form
                    from services.outreach.interface import get_csm

                    if get_csm(session, args.csm_id) is None:
                        print(f"error: no CSM {args.csm_id!r} on the roster (PUT /v1/csms/{args.csm_id} adds one)", file=sys.stderr)
                        return 2
                try:
                    row, key = auth.create_key(session, role=args.role, name=args.name, now=SystemClock().now(), csm_id=args.csm_id)
                except ValueError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 2
                print(f"Created {row.role} key #{row.id} ({row.name}). It is shown only once; store it now:\n\n  {key}\n")
            elif args.keys_cmd == "list":
                now = SystemClock().now()
                for row in auth.list_keys(session):
                    state = "revoked" if row.revoked_at else "expired" if row.expires_at and row.expires_at <= now else "active"
                    print(f"#{row.id:<4} {row.role:<7} {state:<8} tl_{row.prefix}_…  {row.name}")
            elif args.keys_cmd == "revoke":
                if not auth.revoke_key(session, args.id, SystemClock().now()):
                    print(f"error: no key #{args.id} (see `touchline keys list`)", file=sys.stderr)
                    return 2
                print(f"revoked key #{args.id}")
    return 0


def cmd_console_link(args: argparse.Namespace) -> int:
    """Print a one-time sign-in link to the web console (it creates a key of its own)."""
    from services.console.interface import create_link

    settings = get_settings()
    with database(settings) as factory:
        with transaction(factory) as session:
            if args.csm:
                from services.outreach.interface import get_csm

                if get_csm(session, args.csm) is None:
                    print(f"error: no CSM {args.csm!r} on the roster (PUT /v1/csms/{args.csm} adds one)", file=sys.stderr)
                    return 2
            url = create_link(
                session,
                secret=settings.secret,
                base_url=settings.public_url,
                role="csm" if args.csm else args.role,
                csm_id=args.csm,
                now=SystemClock().now(),
                minutes=settings.console_link_minutes,
                key_minutes=settings.console_link_key_minutes,
            )
    print(
        f"Open this link within {settings.console_link_minutes} minutes; it signs in once, "
        f"for at most {settings.console_link_key_minutes} minutes:\n\n  {url}\n"
    )
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from shared.kafka.clients import ensure_topics, topic_specs

    settings = get_settings()
    ensure_topics(settings)
    for t, p in topic_specs(settings).items():
        print(f"{t}\t{p} partitions")
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    """Print the dead letters, newest first: every rejected record with its reason and
    source offset, from the database (they survive a restart of the embedded broker)."""

    with database() as factory, read_transaction(factory) as session:
        rows = [deadletters.as_dict(r) for r in deadletters.newest(session, limit=args.limit or 1_000_000, reason=args.reason)]
    for d in rows:
        original = d["original_text"] if d["original_text"] is not None else repr(d["original_bytes"])
        if args.json:
            d["original_bytes"] = d["original_bytes"].hex()
            print(json.dumps(d))
        else:
            src = d["source"]
            print(
                f"[{d['rejected_at']}] {d['reason']}: {d['detail']}\n    from {src['topic']}/{src['partition']}@{src['offset']}"
                f" ({d['worker']}, DLQ topic {d['dlq_topic']}) key={d['key']!r}\n    original: {original[:300]}"
            )
    if not rows:
        print("no dead letters: nothing has been rejected" + (f" for reason {args.reason!r}" if args.reason else ""))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:

    print(json.dumps(event_json_schema(), indent=2))
    return 0


def cmd_mailsink(args: argparse.Namespace) -> int:
    """The embedded SMTP sink in the foreground (``touchline run`` starts it when
    TOUCHLINE_SMTP_URL is empty)."""

    from services.outreach.interface import serve_devmail

    settings = get_settings()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("mail sink on %s:%d keeping messages in %s", settings.mail_sink_host, settings.mail_sink_port, settings.mail_dir)
    serve_devmail(settings.mail_dir, settings.mail_sink_host, settings.mail_sink_port, stop)
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from services.outreach.interface import seed_starter_content

    settings = get_settings()
    with database(settings) as factory, transaction(factory) as session:
        created = seed_starter_content(session, settings, SystemClock().now(), enable_playbooks=args.enable)
    print("created: " + (", ".join(created) if created else "nothing (the starter content is already there)"))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from services import demo

    return demo.main(args)


def cmd_rules(args: argparse.Namespace) -> int:
    """``touchline rules import <dir|file> [--enable]``, ``touchline rules backtest`` and ``touchline rules tick``."""

    settings = get_settings()
    with database(settings) as factory:
        if args.rules_cmd == "import":
            from services.rules.interface import STARTER_DIR, import_rules

            path = Path(args.path) if args.path else STARTER_DIR
            if not path.exists():
                print(f"error: {path} does not exist", file=sys.stderr)
                return 2

            with transaction(factory) as session, ProgressBar("importing rules", unit="rules") as bar:
                outcomes = import_rules(
                    session,
                    path,
                    actor=f"cli:{getpass.getuser()}",
                    now=SystemClock().now(),
                    retention_days=settings.raw_event_retention_days,
                    enable=True if args.enable else None,
                    progress=bar.update,
                    max_depth=settings.max_json_depth,
                )
                bad = [o for o in outcomes if o.action == "invalid"]
                if bad:
                    session.rollback()
            for o in outcomes:
                print(f"{o.action:<9} {o.rule_id or '?':<28} {o.source}")
                for e in o.errors or []:
                    print(f"          {e['pointer'] or '/'}: {e['message']}")
            if bad:
                print(f"error: {len(bad)} invalid rule(s); nothing was imported", file=sys.stderr)
                return 2
        elif args.rules_cmd == "backtest":
            return _backtest(args, settings, factory)
        elif args.rules_cmd == "tick":
            from services.rules.interface import run_tick

            report = run_tick(factory, settings, SystemClock().now())
            print(f"{report.ran}/{report.rules} scheduled rules ran, {report.matched} matched, {len(report.signals)} signals")
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    """``touchline health score``: score every account for today now, without the freshness
    check (you are the judge, as with ``rules tick``); ``touchline health starter``: save
    the starter model as version 1 if there is no model (docs/health.md)."""
    from services.rules.interface import install_starter_health_model, run_health_day

    settings = get_settings()
    with database(settings) as factory:
        now = SystemClock().now()
        if args.health_cmd == "starter":
            with transaction(factory) as session:
                saved = install_starter_health_model(session, "cli:" + getpass.getuser(), now)
            print("saved the starter health model as version 1" if saved else "a health model exists; left it as it is")
            return 0
        report = run_health_day(factory, settings, now)
        if report.ran:
            print(f"scored {report.scored} accounts for {report.day} with model version {report.model_version} in {report.seconds:.1f}s")
        elif report.done:
            print(f"{report.day} is scored already (the daily scoring runs once a day)")
        else:
            print("no health model: define one with PUT /v1/health/model or `touchline health starter`", file=sys.stderr)
            return 2
    return 0


def cmd_content(args: argparse.Namespace) -> int:
    """``touchline content import <file>``: the content library from YAML or CSV, all or nothing."""
    from services.outreach.interface import import_resources

    settings = get_settings()
    path = Path(args.path)
    if not path.is_file():
        print(f"error: {path} is not a file", file=sys.stderr)
        return 2
    with database(settings) as factory, transaction(factory) as session:
        outcomes = import_resources(
            session, path, actor=f"cli:{getpass.getuser()}", now=SystemClock().now(), max_depth=settings.max_json_depth
        )
        bad = [o for o in outcomes if o.action == "invalid"]
        if bad:
            session.rollback()
    for o in outcomes:
        print(f"{o.action:<9} {o.resource_id or '?':<28} {o.source}")
        for e in o.errors:
            print(f"          {e['pointer'] or '/'}: {e['message']}")
    if bad:
        print(f"error: {len(bad)} invalid resource(s); nothing was imported", file=sys.stderr)
        return 2
    return 0


def _backtest(args: argparse.Namespace, settings: Settings, factory: sessionmaker[Session]) -> int:
    """``touchline rules backtest``: queue a backtest job, then run it here with a progress
    bar (or follow it, if a jobs worker took it first); ``--submit`` only queues it."""

    from services.jobs import JobWorker
    from services.rules.interface import BACKTEST_KIND, BacktestIn, prepare_backtest
    from shared import jobs
    from shared.errors import TouchlineError

    try:
        rule = yaml_load(Path(args.file).read_text(encoding="utf-8"), settings.max_json_depth) if args.file else None
        body = BacktestIn(
            rule_id=args.rule_id, rule=rule, start=args.start, end=args.end, compare_with_current=args.compare, samples=args.samples
        )
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        with transaction(factory) as session:
            prepare_backtest(session, body, settings)
            job = jobs.submit(
                session,
                BACKTEST_KIND,
                body.model_dump(mode="json"),
                created_by=f"cli:{getpass.getuser()}",
                now=SystemClock().now(),
                settings=settings,
            )
    except TouchlineError as exc:
        print(f"error: {exc.code}: {json.dumps(exc.detail)}", file=sys.stderr)
        return 2
    if args.submit:
        print(f"queued job {job.id}; the jobs worker runs it. Follow it with GET /v1/jobs/{job.id}")
        return 0
    label = f"backtest {body.rule_id or (rule or {}).get('id', '')}".strip()
    with ProgressBar(label, unit="days") as bar:
        if bar.tty:  # the bar says it all; their per-step log lines would break it
            for name in ("shared.jobs.runner", "services.rules.backtest.service"):
                logging.getLogger(name).setLevel(logging.WARNING)
        try:
            final = JobWorker(settings, factory, on_progress=bar.update).run_job(job.id)
            if final is None:
                final = _follow_job(factory, job.id, bar)
        except KeyboardInterrupt:
            from shared.jobs import repository as jobs_repo

            with transaction(factory) as session:  # run here: already cancelled; followed: ask its worker to stop
                row = jobs_repo.get(session, job.id)
                if row is not None and row.state not in jobs.FINISHED:
                    jobs_repo.request_cancel(session, row, f"cli:{getpass.getuser()}", SystemClock().now())
            print(f"\ninterrupted: job {job.id} cancelled", file=sys.stderr)
            return 130
    if args.json:
        print(json.dumps({"id": final.id, "state": final.state, "result": final.result, "error": final.error}, indent=2))
    elif final.state == "succeeded":
        r = final.result
        print(
            f"{r['rule_id']}: {r['total_firings']} firings on {r['distinct_accounts']} accounts, {r['start']} to {r['end']} "
            f"(job {final.id}, {r['elapsed_seconds']}s)"
        )
        for w in r["per_week"]:
            print(f"  week of {w['week_start']}: {w['firings']}")
        if r["accounts"]:
            print("  accounts: " + ", ".join(r["accounts"][:20]) + (" …" if len(r["accounts"]) > 20 else ""))
        if "diff" in r:
            d = r["diff"]
            print(
                f"  against version {r['compared_with']['version']}: {len(d['newly_firing'])} newly firing, "
                f"{len(d['stop_firing'])} stop firing, {d['both']} both"
            )
    else:
        print(f"job {final.id} {final.state}: {final.error}", file=sys.stderr)
    return 0 if final.state == "succeeded" else 1


def _follow_job(factory: sessionmaker[Session], job_id: int, bar: ProgressBar) -> Job:
    from shared.jobs import FINISHED
    from shared.jobs import repository as jobs_repo

    while True:
        with factory() as session:
            job = jobs_repo.get(session, job_id)
        if job is None:  # jobs are only pruned long after they finish
            raise SystemExit(f"job {job_id} vanished")
        bar.update(job.progress_done, job.progress_total, job.progress_message)
        if job.state in FINISHED:
            return job
        time.sleep(0.5)  # polling another process's progress in real time


# ---- touchline run ---------------------------------------------------------


def _first_admin_key(settings: Settings, factory: sessionmaker[Session]) -> None:
    from shared import auth

    with transaction(factory) as session:
        if auth.count_keys(session):
            return
        _row, key = auth.create_key(session, role="admin", name="development admin (make run)", now=SystemClock().now())
    key_file = settings.var_dir / "dev-admin-key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    bar = "=" * 78
    print(
        f"\n{bar}\n  Development admin API key (shown once, also saved to {key_file}):\n\n    {key}\n\n"
        f"  Try: curl -H 'Authorization: Bearer {key}' http://{settings.api_host}:{settings.api_port}/v1/accounts\n"
        f"  Console: http://{settings.api_host}:{settings.api_port}/console/ (sign in with this key)\n{bar}\n",
        flush=True,
    )


def _seed_outreach(settings: Settings, factory: sessionmaker[Session]) -> None:
    from services.outreach.interface import seed_starter_content

    with transaction(factory) as session:
        created = seed_starter_content(session, settings, SystemClock().now(), enable_playbooks=True)
    if created:
        log.info("seeded starter outreach content: %s", ", ".join(created))


def cmd_run(args: argparse.Namespace) -> int:
    """Migrate, start the embedded broker, then supervise every process until Ctrl-C
    (services/wiring/supervisor.py: restarts, drain, stop order)."""

    settings = get_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    if not _secret_ready(settings):
        return 2
    # The children's metrics directory, for this process too (the broker's memory gauges):
    # before anything imports prometheus_client, which picks its mode at import.
    env = multiprocess_env(settings)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = env["PROMETHEUS_MULTIPROC_DIR"]
    from shared.kafka.clients import ensure_topics
    from shared.migrate import upgrade

    with database(settings) as factory:
        log.info("migrating %s", _safe_url(settings.sqlalchemy_url))
        upgrade(factory.kw["bind"])
        broker = None
        if settings.embedded_broker:
            broker = EmbeddedBroker(settings.embedded_broker_host, settings.embedded_broker_port, settings.var_dir / "broker.log")
            try:
                broker.start()
            except BrokerError as exc:
                log.error("%s", exc)
                return 1
            log.info(
                "the embedded broker keeps data in memory only: Ctrl-C drains it before it stops; "
                "a crash of the broker itself loses what it held (not the database)"
            )
        ensure_topics(settings)
        _first_admin_key(settings, factory)
        _seed_outreach(settings, factory)

    if settings.embedded_mail_sink:
        log.info(
            "no TOUCHLINE_SMTP_URL: mail goes to the embedded sink on %s:%d (GET /v1/dev/mail lists it)",
            settings.mail_sink_host,
            settings.mail_sink_port,
        )

    def announce() -> None:
        log.info(
            "Touchline is up: API on http://%s:%d (docs at /docs), console at http://%s:%d/console/ "
            "(sign in with the key in %s, or `touchline console-link --role ops`); Ctrl-C drains and stops everything",
            settings.api_host,
            settings.api_port,
            settings.api_host,
            settings.api_port,
            settings.var_dir / "dev-admin-key",
        )

    supervisor = Supervisor(
        settings,
        child_specs(settings, sys.executable, getattr(args, "extra", None)),
        env,
        broker,
        on_broker_restart=lambda: ensure_topics(settings),
        on_up=announce,
    )
    supervisor.install_signal_handlers()
    log.info("starting the API and the workers; the addresses follow once the API answers")
    rc = supervisor.run()
    log.info("bye")
    return rc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="touchline", description="Touchline: scaled customer success, event-driven.")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("run", help="start everything on embedded defaults (broker, SQLite, API, workers)").set_defaults(func=cmd_run)
    sub.add_parser("migrate", help="upgrade the database to the latest migration").set_defaults(func=cmd_migrate)
    rules = sub.add_parser("rules", help="manage rules: import YAML, backtest, run one scheduled tick")
    rules_sub = rules.add_subparsers(dest="rules_cmd", required=True)
    imp = rules_sub.add_parser("import", help="create or update rules from a YAML file or directory (default: the starter library)")
    imp.add_argument("path", nargs="?", help="a .yaml file or a directory of them")
    imp.add_argument("--enable", action="store_true", help="enable the imported rules")
    bt = rules_sub.add_parser("backtest", help="replay stored history for a rule (a background job, with a progress bar)")
    bt.add_argument("rule_id", nargs="?", help="a saved rule (its current version)")
    bt.add_argument("--file", help="a YAML rule definition (unsaved or edited) instead of a saved rule")
    bt.add_argument("--start", required=True, help="first UTC day replayed (YYYY-MM-DD)")
    bt.add_argument("--end", required=True, help="last UTC day replayed, inclusive (YYYY-MM-DD)")
    bt.add_argument("--compare", action="store_true", help="with --file for a saved id: diff against the saved version")
    bt.add_argument("--samples", type=int, default=5)
    bt.add_argument("--json", action="store_true", help="print the job's result as JSON")
    bt.add_argument("--submit", action="store_true", help="only queue the job (the jobs worker runs it)")
    rules_sub.add_parser("tick", help="evaluate the scheduled rules that are due, once")
    rules.set_defaults(func=cmd_rules)
    health = sub.add_parser("health", help="customer health: score today now, or save the starter model")
    health_sub = health.add_subparsers(dest="health_cmd", required=True)
    health_sub.add_parser("score", help="score every account for today (once a day), without waiting for ingest")
    health_sub.add_parser("starter", help="save the starter health model if there is no model yet")
    health.set_defaults(func=cmd_health)
    content = sub.add_parser("content", help="manage the content library: import YAML or CSV")
    content_sub = content.add_subparsers(dest="content_cmd", required=True)
    cimp = content_sub.add_parser("import", help="create or update resources from a .yaml or .csv file (all or nothing)")
    cimp.add_argument("path", help="a .yaml, .yml or .csv file")
    content.set_defaults(func=cmd_content)
    a = sub.add_parser("api", help="serve the HTTP API")
    a.add_argument("--host")
    a.add_argument("--port", type=int)
    a.set_defaults(func=cmd_api)
    w = sub.add_parser(
        "worker", help="run one worker (ingest, rules, outreach, outreach-timers, outreach-sender, outreach-engagements, jobs)"
    )
    w.add_argument("name")
    w.add_argument("--metrics-port", type=int, help="serve this worker's Prometheus metrics on this port")
    w.set_defaults(func=cmd_worker)
    k = sub.add_parser("keys", help="create, list and revoke API keys")
    ksub = k.add_subparsers(dest="keys_cmd", required=True)
    kc = ksub.add_parser("create", help="create a key and print it once")
    kc.add_argument("--role", required=True, choices=["ingest", "ops", "csm", "admin"])
    kc.add_argument("--name", required=True, help="who or what holds the key")
    kc.add_argument("--csm-id", help="for csm keys: the CSM this key acts as")
    ksub.add_parser("list", help="list keys (never their secrets)")
    kr = ksub.add_parser("revoke", help="revoke a key by id")
    kr.add_argument("id", type=int)
    k.set_defaults(func=cmd_keys)
    cl = sub.add_parser("console-link", help="print a one-time sign-in link to the web console")
    who = cl.add_mutually_exclusive_group(required=True)
    who.add_argument("--role", choices=["ops", "admin"], help="sign in as CS Ops (or admin)")
    who.add_argument("--csm", metavar="ID", help="sign in as this pooled CSM (their roster id)")
    cl.set_defaults(func=cmd_console_link)
    sub.add_parser("topics", help="create Touchline's topics if missing and list them").set_defaults(func=cmd_topics)
    d = sub.add_parser("dlq", help="show rejected records (newest first) with their reason and source offset")
    d.add_argument("--limit", type=int, default=50, help="at most this many (0: all)")
    d.add_argument("--reason", help="only this reason (e.g. invalid_json, schema_violation)")
    d.add_argument("--json", action="store_true", help="one JSON object per line")
    d.set_defaults(func=cmd_dlq)
    sub.add_parser("mailsink", help="run the embedded SMTP sink (development)").set_defaults(func=cmd_mailsink)
    sd = sub.add_parser("seed-outreach", help="add the starter templates, playbooks and content library if missing")
    sd.add_argument("--enable", action="store_true", help="enable the starter playbooks")
    sd.set_defaults(func=cmd_seed)
    sub.add_parser("schema", help="print the event contract as JSON Schema").set_defaults(func=cmd_schema)
    dm = sub.add_parser("demo", help="stream realistic synthetic events on a simulated clock")
    _demo_args(dm)
    dm.set_defaults(func=cmd_demo)
    return p


def _demo_args(parser: argparse.ArgumentParser) -> None:
    try:
        from services import demo
    except ImportError:  # pragma: no cover
        return
    demo.add_arguments(parser)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as exc:
        # Each message alone: pydantic's own text repeats the input, which may be a secret.
        for error in exc.errors(include_input=False, include_url=False):
            where = ".".join(str(p) for p in error["loc"])
            print(f"error: settings: {where + ': ' if where else ''}{error['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return 2
    component = args.cmd if args.cmd != "worker" else f"worker-{args.name}"
    configure_logging(settings.log_level, component, settings.log_repeat_seconds)
    # Before any consumer joins a group, whichever command runs (see shared/kafka/compat.py).
    from shared.kafka import compat as kafka_compat

    kafka_compat.apply()
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
