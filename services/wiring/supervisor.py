"""The ``touchline run`` supervisor: the embedded broker, the API, every worker and the
mail sink on one machine, kept up until Ctrl-C.

Healing. A child that exits is started again after a backoff (0.5 s doubling to
``TOUCHLINE_RETRY_MAX_SECONDS``; back to 0.5 s once it has stayed up a minute), with a
log line, and the restarted process reports its count in ``touchline_process_restarts``.
Nothing else is touched: the embedded broker keeps every record a dead worker had not
committed, and the worker's group hands them to the restarted process. The broker
itself is restarted if it dies (what it held in memory is lost then: see
docs/operations.md).

Stopping (SIGINT/SIGTERM), in the order data flows, so the memory-only broker is empty
when it stops:
1. stop the producers: the API and any extra producer (the live demo);
2. for each topic in pipeline order (``product.events``, then ``cs.signals``): wait until
   every group consuming it has committed everything (progress in the log: lag per
   group), then stop those workers. A worker that dies meanwhile is restarted;
3. stop the rest (timers, sender, mail sink), then the broker.
The wait is bounded by ``TOUCHLINE_DRAIN_TIMEOUT_SECONDS``; a second Ctrl-C skips it.

The broker's memory: Tansu keeps every record and honours neither retention nor
DeleteRecords, so it grows with every event. Every 30 s the supervisor reads its RSS and
exports it (``touchline_embedded_broker_rss_bytes``); above
``TOUCHLINE_EMBEDDED_BROKER_WARN_MB`` it warns, at most every 10 minutes, naming the
remedies (the console's Overview shows the same). Bounding it (opt-in,
``TOUCHLINE_EMBEDDED_BROKER_MAX_MB``): above that RSS the broker is recycled
(:meth:`Supervisor.recycle_broker`). Lossless for what goes through Touchline, not for
producers outside it: see docs/architecture.md.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from shared.broker import EmbeddedBroker, dies_with_parent, memory_warning
from shared.kafka.lag import LagProbe
from shared.settings import Settings

log = logging.getLogger("touchline.supervisor")

PRODUCER, CONSUMER, AUX = "producer", "consumer", "aux"
BACKOFF_INITIAL = 0.5
STABLE_AFTER = 60.0  # a child up this long is healthy again: its backoff starts over
STOP_GRACE = 20.0
MEMORY_CHECK_SECONDS = 30.0  # how often the broker's RSS is read
MEMORY_WARN_EVERY = 600.0  # a broker over TOUCHLINE_EMBEDDED_BROKER_WARN_MB is logged at most this often


@dataclass
class ChildSpec:
    name: str
    argv: list[str]
    role: str = CONSUMER
    consumes: dict[str, list[str]] = field(default_factory=dict)  # group id -> topics, drained before it stops


@dataclass
class Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    restart_at: float | None = None
    backoff: float = BACKOFF_INITIAL
    delays: list[float] = field(default_factory=list)  # the backoffs chosen so far
    stopped: bool = False  # deliberately stopped: do not restart


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"exited with code {code}"


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        specs: list[ChildSpec],
        env: dict[str, str],
        broker: EmbeddedBroker | None = None,
        on_broker_restart: Callable[[], None] | None = None,
        on_up: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        # Called once, when the API first answers /healthz: "up" is said when it is true.
        self.on_up = on_up
        self.children = {s.name: Child(s) for s in specs}
        self.env = env
        self.broker = broker
        self.on_broker_restart = on_broker_restart
        self.stop_requests = 0
        self.poll_interval = 0.2
        self.recycles = 0
        self._recycling = False
        self._next_memory_check = time.monotonic() + MEMORY_CHECK_SECONDS
        self._next_memory_warning = 0.0

    # ---- the embedded broker's memory: watched, and bounded if asked ----
    def check_broker_memory(self, now: float) -> float | None:
        """Every MEMORY_CHECK_SECONDS: read the broker's RSS, export it, warn past
        TOUCHLINE_EMBEDDED_BROKER_WARN_MB (at most every MEMORY_WARN_EVERY) and recycle
        it past TOUCHLINE_EMBEDDED_BROKER_MAX_MB. The RSS in MB, or None when not due."""
        # Imported here, not at the top: cmd_run points PROMETHEUS_MULTIPROC_DIR at the
        # children's directory first, so these gauges reach the API's /metrics, and
        # prometheus_client picks its mode when it is first imported.
        from shared.metrics import EMBEDDED_BROKER_RSS, EMBEDDED_BROKER_WARN

        if self.broker is None or self.broker.proc is None or self._recycling or self.stop_requests or now < self._next_memory_check:
            return None
        self._next_memory_check = now + MEMORY_CHECK_SECONDS
        mb = rss_mb(self.broker.proc.pid)
        if mb is None:
            return None
        warn, limit = self.settings.embedded_broker_warn_mb, self.settings.embedded_broker_max_mb
        EMBEDDED_BROKER_RSS.set(mb * 2**20)
        EMBEDDED_BROKER_WARN.set(warn * 2**20)
        if warn and mb >= warn and now >= self._next_memory_warning:
            self._next_memory_warning = now + MEMORY_WARN_EVERY
            log.warning("%s", memory_warning(mb, warn, limit))
        if limit and mb >= limit:
            log.warning(
                "the embedded broker holds %.0f MB (TOUCHLINE_EMBEDDED_BROKER_MAX_MB=%d) and cannot trim itself "
                "(no retention, no DeleteRecords): recycling it",
                mb,
                limit,
            )
            self.recycle_broker()
        return mb

    def recycle_broker(self) -> bool:
        """Give the embedded broker's memory back without losing a record: stop the
        producers, let the consumers drain for a few seconds and stop them (they commit
        on the way out), copy every record some group has not committed yet, and the
        DLQs, restart the broker empty, write the copy back, start everyone again. The
        copy, not the drain, is what makes it lossless: a group re-reads at most what it
        had not committed, and every effect is keyed, so that changes nothing."""
        from shared.kafka.clients import ensure_topics

        self._recycling = True
        stopped: list[Child] = []
        try:
            children = list(self.children.values())
            stopped = [c for c in children if c.spec.role == PRODUCER and not c.stopped]
            self._stop(stopped)
            consumers = [c for c in children if c.spec.role == CONSUMER and c.spec.consumes and not c.stopped]
            stopped += consumers
            self._drain(consumers, deadline=time.monotonic() + min(15.0, self.settings.drain_timeout_seconds), recycling=True)
            self._stop(consumers)
            residue = read_residue(self.settings, {g: ts for c in consumers for g, ts in c.spec.consumes.items()})
            assert self.broker is not None  # recycled only when there is an embedded broker
            self.broker.stop()
            self.broker.start()
            ensure_topics(self.settings)
            put_back(self.settings, residue)
            self.recycles += 1
            log.warning(
                "embedded broker recycled (%d so far): %d records carried over (DLQs and not yet consumed)", self.recycles, len(residue)
            )
            return True
        except Exception:
            log.exception("broker recycle failed; carrying on (the broker is restarted if it is down)")
            self._next_memory_check = time.monotonic() + 300
            return False
        finally:
            for child in stopped:
                child.stopped = False
                self._start(child)
            self._recycling = False

    # ---- signals ------------------------------------------------------
    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        self.stop_requests += 1
        name = signal.Signals(signum).name if signum else "stop"
        if self.stop_requests == 1:
            log.info("%s received: stopping producers, draining, then stopping (again to stop at once)", name)
        else:
            log.warning("%s received again: stopping now without draining", name)

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)

    # ---- children -----------------------------------------------------
    def _start(self, child: Child) -> None:
        env = {**self.env, "TOUCHLINE_RESTARTS": str(child.restarts)}
        child.proc = subprocess.Popen(child.spec.argv, env=env, start_new_session=True, preexec_fn=dies_with_parent())
        child.started_at = time.monotonic()
        child.restart_at = None
        log.info("started %s (pid %d)%s", child.spec.name, child.proc.pid, f", restart {child.restarts}" if child.restarts else "")

    def start_all(self) -> None:
        for child in self.children.values():
            self._start(child)

    def pid(self, name: str) -> int | None:
        proc = self.children[name].proc
        return proc.pid if proc else None

    def heal(self) -> None:
        """One round of supervision: restart the broker or any child that died."""
        if self.broker is not None and self.broker.proc is not None and self.broker.proc.poll() is not None:
            self._restart_broker()
        now = time.monotonic()
        self.check_broker_memory(now)
        for child in self.children.values():
            if child.stopped or child.proc is None:
                continue
            code = child.proc.poll()
            if code is not None and child.restart_at is None:
                if now - child.started_at >= STABLE_AFTER:
                    child.backoff = BACKOFF_INITIAL
                child.restart_at = now + child.backoff
                child.delays.append(child.backoff)
                log.error(
                    "%s %s; restarting it in %.1fs (restart %d); the broker and the other processes carry on",
                    child.spec.name,
                    _describe_exit(code),
                    child.backoff,
                    child.restarts + 1,
                )
                child.backoff = min(child.backoff * 2, self.settings.retry_max_seconds)
            if child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self._start(child)

    def _restart_broker(self) -> None:
        assert self.broker is not None and self.broker.proc is not None  # called when its process has exited
        log.error(
            "the embedded broker %s; restarting it. Records it held that were not yet consumed are lost (see docs/operations.md)",
            _describe_exit(self.broker.proc.returncode),
        )
        self.broker.stop()
        self.broker.start()
        if self.on_broker_restart:
            self.on_broker_restart()
        log.info("embedded broker restarted; workers rejoin their groups by themselves")

    def api_answers(self) -> bool:
        """Does the API answer /healthz yet (one short request on the loopback)?"""
        url = f"http://{self.settings.api_host}:{self.settings.api_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=0.5) as answer:  # noqa: S310 (our own API, http on loopback)
                return bool(answer.status == 200)
        except OSError:
            return False

    def run(self) -> int:
        self.start_all()
        try:
            while not self.stop_requests:
                self.heal()
                if self.on_up is not None and self.api_answers():
                    self.on_up()
                    self.on_up = None
                time.sleep(self.poll_interval)
        finally:
            self.shutdown()
        return 0

    # ---- stopping -----------------------------------------------------
    def _stop(self, children: list[Child]) -> None:
        for child in children:
            child.stopped = True
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for child in children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", child.spec.name)
                child.proc.kill()
                child.proc.wait()
            log.info("stopped %s", child.spec.name)

    def shutdown(self) -> None:
        children = list(self.children.values())
        self._stop([c for c in children if c.spec.role == PRODUCER])
        if self.broker is not None:
            self._drain([c for c in children if c.spec.role == CONSUMER])
        self._stop([c for c in children if not c.stopped])
        if self.broker is not None:
            self.broker.stop()
            log.info("embedded broker stopped")

    def _drain(self, consumers: list[Child], deadline: float | None = None, recycling: bool = False) -> bool:
        """Stage by stage in pipeline order: wait until the groups of a topic have
        committed everything, then stop their workers. True if everything drained."""
        from shared.kafka.lag import LagProbe

        order = [self.settings.topic_events, self.settings.topic_signals]
        topics = order + sorted({t for c in consumers for ts in c.spec.consumes.values() for t in ts} - set(order))
        deadline = deadline or time.monotonic() + self.settings.drain_timeout_seconds
        try:
            probe = LagProbe(self.settings)
        except Exception as exc:  # the broker is gone: there is nothing left to drain
            log.warning("cannot reach the broker to drain (%s); stopping the workers", exc)
            return False
        try:
            for topic in topics:
                stage = [c for c in consumers if any(topic in ts for ts in c.spec.consumes.values())]
                if stage:
                    if not self._drain_topic(probe, topic, stage, deadline, recycling) and recycling:
                        return False  # what is left is carried over by the recycle
                    self._stop(stage)
            return True
        finally:
            probe.close()

    def _drain_topic(self, probe: LagProbe, topic: str, stage: list[Child], deadline: float, recycling: bool = False) -> bool:
        groups = sorted({g for c in stage for g, ts in c.spec.consumes.items() if topic in ts})
        next_report = 0.0
        while True:
            self.heal()  # a worker that dies while draining is restarted: its records are still here
            try:
                lags = {g: sum(probe.lag(g, [topic]).values()) for g in groups}
            except Exception as exc:  # a broker hiccup: try again until the deadline
                log.warning("drain: could not read the lag of %s (%s)", topic, exc)
                lags = None
            if lags is not None and not any(lags.values()):
                log.info("drained %s: %s", topic, ", ".join(f"{g} 0 behind" for g in groups))
                return True
            now = time.monotonic()
            if self.stop_requests > (0 if recycling else 1):
                log.warning("not draining %s any further: stopping now", topic)
                return False
            if now >= deadline:
                if recycling:
                    log.info(
                        "recycle: %s not drained (%s); the rest is carried over",
                        topic,
                        ", ".join(f"{g} {n} behind" for g, n in (lags or {}).items()) or "lag unknown",
                    )
                    return False
                log.error(
                    "drain timeout (%.0fs, TOUCHLINE_DRAIN_TIMEOUT_SECONDS): stopping with %s; those records "
                    "are lost with the embedded broker",
                    self.settings.drain_timeout_seconds,
                    ", ".join(f"{g} {n} behind on {topic}" for g, n in (lags or {}).items()) or "lag unknown",
                )
                return False
            if lags is not None and now >= next_report:
                log.info("draining %s: %s", topic, ", ".join(f"{g} {n} behind" for g, n in lags.items()))
                next_report = now + 2.0
            time.sleep(self.poll_interval)


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def read_residue(settings: Settings, groups: dict[str, list[str]]) -> list[tuple[Any, ...]]:
    """Every record of every topic that some group still has to consume, or that no
    group consumes at all (the DLQs): (topic, partition, key, value, headers)."""
    from kafka import TopicPartition

    from shared.kafka.clients import topic_specs
    from shared.kafka.lag import LagProbe

    probe = LagProbe(settings)
    out: list[tuple[Any, ...]] = []
    try:
        committed: dict[str, dict[str, Any]] = {
            g: {tp: om.offset for tp, om in (probe.admin.list_group_offsets(g).get(g) or {}).items()} for g in groups
        }
        for topic, partitions in topic_specs(settings).items():
            readers = [g for g, ts in groups.items() if topic in ts]
            for p in range(partitions):
                tp = TopicPartition(topic, p)
                start = min((max(0, committed[g].get(tp, 0)) for g in readers), default=0)
                hw = probe.high_watermark(tp, start)
                if not hw or hw <= start:
                    continue
                consumer = probe.consumer
                consumer.assign([tp])
                consumer.seek(tp, start)
                deadline = time.monotonic() + 60
                while consumer.position(tp) < hw and time.monotonic() < deadline:
                    for records in consumer.poll(timeout_ms=200, max_records=5000).values():
                        out.extend((topic, p, r.key, r.value, list(r.headers or [])) for r in records if r.offset < hw)
    finally:
        probe.close()
    return out


def put_back(settings: Settings, records: list[tuple[Any, ...]]) -> None:
    from shared.kafka.clients import make_producer

    if not records:
        return
    producer = make_producer(settings)
    try:
        for topic, partition, key, value, headers in records:
            producer.send(topic, key=key, value=value, headers=headers, partition=partition)
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=5)


def child_specs(settings: Settings, python: str, extra: dict[str, list[str]] | None = None) -> list[ChildSpec]:
    """What ``touchline run`` starts: the API, every registered worker (with the groups
    and topics it consumes), the mail sink when mail is local, and ``extra`` producers."""
    from services.wiring.workers import WORKERS, load_worker

    base = [python, "-m", "services.wiring.cli"]
    specs = [ChildSpec("api", base + ["api"], PRODUCER)]
    for name in WORKERS:
        cls = load_worker(name)
        consumes = {}
        if hasattr(cls, "consumes"):
            group, topics = cls.consumes(settings)
            consumes[group] = topics
        specs.append(ChildSpec(f"worker-{name}", base + ["worker", name], CONSUMER, consumes))
    if settings.embedded_mail_sink:
        specs.append(ChildSpec("mailsink", base + ["mailsink"], AUX))
    for name, argv in (extra or {}).items():
        specs.append(ChildSpec(name, argv, PRODUCER))
    return specs


def multiprocess_env(settings: Settings) -> dict[str, str]:
    """The children's environment: Prometheus multiprocess mode, so the API's /metrics
    aggregates every process."""
    import shutil

    metrics_dir = settings.var_dir / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    return {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir.resolve())}
