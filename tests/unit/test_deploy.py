"""Everything in deploy/ is validated and cross-checked against the code, offline:

- compose.yaml against the Compose Specification's JSON Schema (vendored in
  deploy/schemas/, see its README for source and version);
- every Kubernetes manifest against the Kubernetes OpenAPI schemas bundled in the
  pinned ``kubernetes-validate``, and KEDA ScaledObjects against the CRD's
  openAPIV3Schema (vendored);
- the alert rules and the compose Prometheus configuration with ``promtool``;
- the Grafana dashboard loads and has a row per service.

Cross-checks: every process the files start is a ``touchline`` command (and every
worker has a service and a Deployment); every environment variable they set is a
documented setting; every metric name they query is exported by the code; every
runbook link lands on a heading of docs/operations.md.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import secrets
import shlex
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, generate_latest

from services.wiring.cli import build_parser
from services.wiring.workers import WORKERS, load_worker
from shared.settings import Settings
from tests.support.helpers import ROOT

DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
ENV_FILE = DEPLOY / "compose" / "touchline.env"
K8S = DEPLOY / "kubernetes"
ALERTS = DEPLOY / "observability" / "alerts.yml"
DASHBOARD = DEPLOY / "observability" / "grafana" / "touchline.json"
OPERATIONS = ROOT / "docs" / "operations.md"
KUBERNETES_VERSION = "1.37.0"  # a schema version bundled in the pinned kubernetes-validate

# Workers that consume a topic as a group: scaled by partitions.
PARTITIONED = {"ingest", "rules", "outreach"}


# ---- helpers ----------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def touchline_services(doc: dict) -> dict[str, dict]:
    """Compose services that run the Touchline image (they all carry its build)."""
    return {n: s for n, s in doc["services"].items() if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile"}


def k8s_documents() -> list[tuple[Path, dict]]:
    docs = []
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path, doc))
    return docs


def k8s_containers() -> list[tuple[str, dict]]:
    out = []
    for path, doc in k8s_documents():
        if doc["kind"] in ("Deployment", "Job"):
            spec = doc["spec"]["template"]["spec"]
            for c in spec.get("initContainers", []) + spec["containers"]:
                out.append((f"{path.name}:{doc['metadata']['name']}/{c['name']}", c))
    return out


def known_variables() -> set[str]:
    """Settings fields, plus any variable the README's table documents."""
    names = {f"TOUCHLINE_{n.upper()}" for n in Settings.model_fields}
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("| `TOUCHLINE_"):
            names.update(re.findall(r"`(TOUCHLINE_[A-Z0-9_]+)`", line.split("|")[1]))
    return names


def assert_touchline_command(argv: list[str], where: str) -> None:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: `touchline {shlex.join(argv)}` is not a touchline command")
    if args.cmd == "worker":
        assert args.name in WORKERS, f"{where}: no worker {args.name!r} (services/wiring/workers.py has {sorted(WORKERS)})"


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def operations_anchors() -> set[str]:
    return {slug(m.group(2)) for m in re.finditer(r"^(#{1,6})\s+(.+?)\s*$", OPERATIONS.read_text(), re.M)}


def exported_metric_names() -> set[str]:
    """Every sample name Touchline's processes expose: the prometheus_client metrics
    defined anywhere in shared/ and services/ (with the suffixes their types add),
    the default process/platform/GC collectors, and Prometheus' own ``up``."""
    names = {"up"}
    pattern = re.compile(r"\b(Counter|Gauge|Histogram|Summary|Info|Enum)\(\s*[\"']([a-zA-Z_:][a-zA-Z0-9_:]*)[\"']")
    for path in list((ROOT / "shared").rglob("*.py")) + list((ROOT / "services").rglob("*.py")):
        for kind, name in pattern.findall(path.read_text()):
            if kind == "Counter":
                base = name.removesuffix("_total")
                names |= {base + "_total", base + "_created"}
            elif kind in ("Histogram", "Summary"):
                names |= {name, name + "_bucket", name + "_sum", name + "_count", name + "_created"}
            elif kind == "Info":
                names.add(name + "_info")
            else:
                names.add(name)
    registry = CollectorRegistry()
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=registry)
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    # The process collector exposes nothing where /proc is missing; its names are fixed.
    names |= {
        "process_start_time_seconds",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
    }
    return names


PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "inf", "nan"}


def metric_names_in(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers that are not functions,
    aggregations, keywords, label names or template variables."""
    e = expr.replace("$__rate_interval", "5m")
    e = re.sub(r'"(?:\\.|[^"\\])*"', '""', e)  # strings
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)  # label lists
    found = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        name = m.group(0)
        after = e[m.end() :].lstrip()
        if after.startswith("(") or name.lower() in PROMQL_KEYWORDS:
            continue
        if re.fullmatch(r"\d+[smhdwy]?", name):
            continue
        found.add(name)
    return found


def promql_sources() -> list[tuple[str, str]]:
    out = []
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            out.append((f"alert {rule.get('alert') or rule.get('record')}", rule["expr"]))
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            out.append((f"dashboard panel {panel['title']!r}", target["expr"]))
    for path, doc in k8s_documents():
        if doc["kind"] == "ScaledObject":
            for trigger in doc["spec"]["triggers"]:
                if trigger["type"] == "prometheus":
                    out.append((f"{path.name}:{doc['metadata']['name']}", trigger["metadata"]["query"]))
    return out


def promtool(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    if exe is None:
        # Not a skip: `make test` installs it, so a missing promtool is a machine to fix.
        pytest.fail("promtool is missing: run tools/install-system-deps.sh (Debian's prometheus), as `make test` does")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, check=False)


# ---- the helpers can fail ----------------------------------------------------


def test_the_promql_name_extraction_finds_metrics_and_skips_the_rest():
    assert metric_names_in(
        'sum by (worker, topic) (rate(touchline_events_consumed_total{worker="ingest", topic=~"a.b"}[$__rate_interval]))'
        " / on(instance) group_left() up > bool 0 and histogram_quantile(0.95, sum by (le) (rate(x_bucket[5m])))"
    ) == {"touchline_events_consumed_total", "up", "x_bucket"}


def test_slugs_follow_githubs_anchor_rules():
    assert slug("Consumer lag is growing") == "consumer-lag-is-growing"
    assert slug("The DLQ is growing") == "the-dlq-is-growing"
    assert slug("Paged at 3 a.m.") == "paged-at-3-am"
    assert slug("`touchline run` (development)") == "touchline-run-development"


# ---- compose ---------------------------------------------------------------


def compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads((DEPLOY / "schemas" / "compose-spec.json").read_text())
    assert schema["$schema"].startswith("https://json-schema.org/draft-07/")
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_compose_file_matches_the_compose_specification():
    validator = compose_validator()
    doc = compose()
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)
    # The schema has teeth: a misspelt key and a wrong type are both refused.
    bad = copy.deepcopy(doc)
    bad["services"]["api"]["restrat"] = "always"
    assert not validator.is_valid(bad)
    bad = copy.deepcopy(doc)
    bad["services"]["api"]["ports"] = {"8000": 8000}
    assert not validator.is_valid(bad)


def test_compose_runs_every_worker_and_only_touchline_commands():
    doc = compose()
    services = touchline_services(doc)
    started = set()
    for name, svc in services.items():
        assert_touchline_command(svc["command"], f"compose service {name}")
        if svc["command"][0] == "worker":
            started.add(svc["command"][1])
            assert "--metrics-port" in svc["command"], f"{name}: Prometheus scrapes workers on their metrics port"
    assert started == set(WORKERS), f"one compose service per worker: missing {set(WORKERS) - started}"
    assert doc["services"]["ingest"]["deploy"]["replicas"] == 2  # two ingest workers share the group
    assert {s["command"][0] for s in services.values()} >= {"migrate", "topics", "api"}


def test_the_readme_and_the_cli_name_every_worker():
    """Without containers the README's "Running in production" block is the process list,
    and `touchline worker --help` the names: each names every worker `touchline run`
    starts (review: both left out outreach-engagements, so a deploy by the README never
    assigned an engagement)."""
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("## Running in production") :].split("```bash", 1)[1].split("```", 1)[0]
    listed = set(re.findall(r"^touchline worker (\S+)", block, re.M))
    assert listed == set(WORKERS), f"missing from the README: {set(WORKERS) - listed}"
    ports = re.findall(r"^touchline worker \S+ --metrics-port (\d+)", block, re.M)
    assert len(ports) == len(set(ports)) == len(WORKERS)
    helps = {a.dest: a.help for a in build_parser()._subparsers._group_actions[0]._choices_actions}  # type: ignore[union-attr]
    assert all(name in helps["worker"] for name in WORKERS), helps["worker"]


def test_compose_long_running_services_wait_for_setup_and_restart_with_health_checks():
    doc = compose()
    for name, svc in doc["services"].items():
        if name in ("migrate", "topics"):
            assert svc["restart"] == "no"
            continue
        assert svc.get("restart") == "unless-stopped", f"{name} needs a restart policy"
        assert "healthcheck" in svc and not svc["healthcheck"].get("disable"), f"{name} needs a health check"
        if name in touchline_services(doc):
            deps = svc["depends_on"]
            assert deps["migrate"]["condition"] == deps["topics"]["condition"] == "service_completed_successfully", name
    assert doc["services"]["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert doc["services"]["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    kafka = doc["services"]["kafka"]["environment"]
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"] and kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_compose_mounts_files_that_exist():
    doc = compose()
    for name, svc in doc["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name} mounts {source}, which does not exist"
        for env_file in svc.get("env_file", []):
            assert (COMPOSE.parent / env_file).is_file()


def test_compose_prometheus_scrapes_every_touchline_process():
    config = yaml.safe_load((COMPOSE.parent / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"touchline-api"} | {f"touchline-{w}" for w in WORKERS}
    for worker in WORKERS:
        [sd] = jobs[f"touchline-{worker}"]["dns_sd_configs"]
        assert sd["port"] == 9100 and sd["names"] == [worker]  # the compose service of that name


def test_env_file_mirrors_the_settings_table():
    text = ENV_FILE.read_text()
    set_vars = dict(re.findall(r"^(TOUCHLINE_[A-Z0-9_]+)=(.*)$", text, re.M))
    listed = set(set_vars) | set(re.findall(r"^#\s*(TOUCHLINE_[A-Z0-9_]+)=", text, re.M))
    settings = {f"TOUCHLINE_{n.upper()}" for n in Settings.model_fields}
    assert not settings - listed, f"add to touchline.env (set or as a commented default): {sorted(settings - listed)}"
    unknown = listed - known_variables()
    assert not unknown, f"touchline.env names variables no setting reads: {sorted(unknown)}"
    # The values it sets, with the secret compose.yaml adds from the user's own environment,
    # are valid settings for production.
    assert "TOUCHLINE_SECRET_KEY" not in set_vars, "no secret ships in the repository (docs/security.md)"
    env = {**set_vars, "TOUCHLINE_SECRET_KEY": secrets.token_urlsafe(48)}
    Settings(**{k.removeprefix("TOUCHLINE_").lower(): v for k, v in env.items()})
    assert env["TOUCHLINE_ENV"] == "production" and env["TOUCHLINE_KAFKA_BOOTSTRAP"] and env["TOUCHLINE_DATABASE_URL"]


def test_compose_requires_the_users_own_secret():
    for name, svc in touchline_services(compose()).items():
        assert svc["environment"]["TOUCHLINE_SECRET_KEY"].startswith("${TOUCHLINE_SECRET_KEY:?"), name


def test_compose_sets_only_known_variables():
    doc = compose()
    known = known_variables()
    for name, svc in touchline_services(doc).items():
        env = svc.get("environment", {})
        names = set(env) if isinstance(env, dict) else {e.split("=")[0] for e in env}
        assert names <= known, f"{name} sets unknown variables {sorted(names - known)}"


# ---- the image -------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile_is_one_non_root_image_with_touchline_as_entry_point():
    ins = dockerfile_instructions()
    froms = [rest for op, rest in ins if op == "FROM"]
    assert len(froms) == 2, "multi-stage: build, then runtime"
    assert [rest for op, rest in ins if op == "ARG"] == ["PYTHON_IMAGE=python:3.11-slim-bookworm"]
    assert ("ENTRYPOINT", '["touchline"]') in ins
    [user] = [rest for op, rest in ins if op == "USER"]
    assert not user.startswith("0") and user != "root"
    [cmd] = [json.loads(rest) for op, rest in ins if op == "CMD"]
    assert_touchline_command(cmd, "Dockerfile CMD")
    assert any(op == "HEALTHCHECK" and "healthcheck.py" in rest for op, rest in ins)
    env = " ".join(rest for op, rest in ins if op == "ENV")
    assert set(re.findall(r"\b(TOUCHLINE_[A-Z0-9_]+)=", env)) <= known_variables()


def test_dockerfile_copies_only_what_exists_and_what_dockerignore_lets_through():
    allowed = [line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    for op, rest in dockerfile_instructions():
        if op != "COPY" or rest.startswith("--from"):
            continue
        *sources, _dest = rest.split()
        for source in sources:
            source = source.rstrip("/")
            assert (ROOT / source).exists(), f"COPY {source}: no such path"
            assert any(source == a or source.startswith(a + "/") for a in allowed), f"{source} is excluded by .dockerignore"
    for a in allowed:
        assert (ROOT / a).exists(), f".dockerignore lets through {a}, which does not exist"
    assert "tests" not in allowed and "var" not in allowed


def load_healthcheck():
    spec = importlib.util.spec_from_file_location("touchline_docker_healthcheck", DEPLOY / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_probes_healthz_for_the_api_and_the_metrics_port_for_workers():
    hc = load_healthcheck()
    assert hc.touchline_args(["/opt/touchline/bin/python", "/opt/touchline/bin/touchline", "api"]) == ["api"]
    assert hc.touchline_args(["/opt/touchline/bin/touchline", "worker", "ingest"]) == ["worker", "ingest"]
    assert hc.touchline_args(["python", "-m", "services.wiring.cli", "api"]) == ["api"]
    # Under `init: true` the init's own command line ends in Touchline's: the same arguments.
    assert hc.touchline_args(["/sbin/docker-init", "--", "touchline", "api"]) == ["api"]
    assert hc.touchline_args(["postgres", "-D", "/data"]) is None
    assert hc.probe_url(["api"], {}) == "http://127.0.0.1:8000/healthz"
    assert hc.probe_url(["api", "--port", "9000"], {"TOUCHLINE_API_PORT": "8001"}) == "http://127.0.0.1:9000/healthz"
    assert hc.probe_url(["api"], {"TOUCHLINE_API_PORT": "8001"}) == "http://127.0.0.1:8001/healthz"
    assert hc.probe_url(["worker", "rules", "--metrics-port", "9100"], {}) == "http://127.0.0.1:9100/metrics"
    assert hc.probe_url(["worker", "rules", "--metrics-port=9102"], {}) == "http://127.0.0.1:9102/metrics"
    assert hc.probe_url(["worker", "rules"], {}) is None
    assert hc.probe_url(["migrate"], {}) is None


# ---- Kubernetes --------------------------------------------------------------


def keda_validator():
    schema = json.loads((DEPLOY / "schemas" / "keda-scaledobject-v1alpha1.json").read_text())
    return jsonschema.Draft7Validator(schema)


def validate_k8s(doc: dict) -> None:
    if doc["apiVersion"].startswith("keda.sh/"):
        assert doc["apiVersion"] == "keda.sh/v1alpha1" and doc["kind"] == "ScaledObject"
        errors = list(keda_validator().iter_errors(doc))
        if errors:
            raise jsonschema.ValidationError("; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors))
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_every_kubernetes_manifest_validates():
    docs = k8s_documents()
    assert len(docs) >= 15
    failures = []
    for path, doc in docs:
        try:
            validate_k8s(doc)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            failures.append(f"{path.relative_to(ROOT)} {doc['kind']}/{doc['metadata']['name']}: {exc}")
    assert not failures, "\n".join(failures)


def test_the_kubernetes_validators_have_teeth():
    by_kind = {doc["kind"]: doc for _, doc in k8s_documents()}
    bad = copy.deepcopy(by_kind["Deployment"])
    bad["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["prot"] = 8000
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_k8s(bad)
    bad = copy.deepcopy(by_kind["ScaledObject"])
    del bad["spec"]["scaleTargetRef"]
    with pytest.raises(jsonschema.ValidationError):
        validate_k8s(bad)
    bad = copy.deepcopy(by_kind["ScaledObject"])
    bad["spec"]["maxReplicaCount"] = "twelve"
    with pytest.raises(jsonschema.ValidationError):
        validate_k8s(bad)


def test_kubernetes_runs_every_worker_and_only_touchline_commands():
    started = set()
    for where, container in k8s_containers():
        assert container["image"].split(":")[0].endswith("/touchline")
        assert_touchline_command(container["args"], where)
        if container["args"][0] == "worker":
            started.add(container["args"][1])
    assert started == set(WORKERS), f"one Deployment per worker: missing {set(WORKERS) - started}"


def test_kubernetes_sets_only_known_variables_and_secrets_hold_the_secrets():
    known = known_variables()
    for path, doc in k8s_documents():
        if doc["kind"] == "ConfigMap":
            assert set(doc["data"]) <= known, f"{path.name}: {sorted(set(doc['data']) - known)}"
        if doc["kind"] == "Secret":
            assert set(doc["stringData"]) == {"TOUCHLINE_DATABASE_URL", "TOUCHLINE_SECRET_KEY", "TOUCHLINE_SMTP_URL"}
    for where, container in k8s_containers():
        names = {e["name"] for e in container.get("env", [])}
        assert names <= known, f"{where}: {sorted(names - known)}"
        refs = {next(iter(v.values()))["name"] for v in container["envFrom"]}
        assert refs == {"touchline-config", "touchline-secrets"}, where


def parse_quantity(q) -> float:
    q = str(q)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if q.endswith(suffix):
            return float(q[: -len(suffix)]) * factor
    return float(q)


def test_deployments_have_probes_limits_and_a_disruption_budget():
    docs = [doc for _, doc in k8s_documents()]
    pdbs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PodDisruptionBudget"}
    for d in (d for d in docs if d["kind"] == "Deployment"):
        name = d["metadata"]["name"]
        [c] = d["spec"]["template"]["spec"]["containers"]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            port = c[probe]["httpGet"]["port"]
            assert port in {p["name"] for p in c["ports"]}, f"{name} {probe} probes an unnamed port"
        for resource in ("cpu", "memory"):
            assert parse_quantity(c["resources"]["requests"][resource]) <= parse_quantity(c["resources"]["limits"][resource])
        if c["args"][0] == "worker":
            port = int(c["args"][c["args"].index("--metrics-port") + 1])
            assert port == c["ports"][0]["containerPort"]
            ann = d["spec"]["template"]["metadata"]["annotations"]
            assert ann["prometheus.io/port"] == str(port)
        assert name in pdbs and pdbs[name]["spec"]["selector"] == d["spec"]["selector"], f"{name} needs a PDB"
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    api = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "touchline-api")
    [c] = api["spec"]["template"]["spec"]["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_scaled_objects_follow_lag_up_to_the_partition_count_and_the_sender_its_backlog():
    docs = [doc for _, doc in k8s_documents()]
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "touchline-config")
    partitions = int(config["data"]["TOUCHLINE_TOPIC_PARTITIONS"])
    settings = Settings(topic_partitions=partitions, kafka_bootstrap=config["data"]["TOUCHLINE_KAFKA_BOOTSTRAP"])
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    scaled = {}
    for so in (d for d in docs if d["kind"] == "ScaledObject"):
        target = deployments[so["spec"]["scaleTargetRef"]["name"]]
        worker = target["spec"]["template"]["spec"]["containers"][0]["args"][1]
        scaled[worker] = so
        [trigger] = so["spec"]["triggers"]
        if worker in PARTITIONED:
            instance = load_worker(worker)(settings, None)
            meta = trigger["metadata"]
            assert trigger["type"] == "kafka"
            assert meta["consumerGroup"] == instance.group_id
            assert [meta["topic"]] == instance.topics()
            assert meta["bootstrapServers"] == settings.kafka_bootstrap
            assert meta["allowIdleConsumers"] == "false"
            assert so["spec"]["maxReplicaCount"] <= partitions, f"{worker} may scale past the partition count"
        else:
            assert trigger["type"] == "prometheus"
            assert "touchline_outbox_backlog" in trigger["metadata"]["query"]
    assert set(scaled) == PARTITIONED | {"outreach-sender"}


# ---- observability -----------------------------------------------------------


def test_alert_rules_pass_promtool():
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_on_the_series_they_are_written_for():
    # alerts_test.yml: lag growing vs steady, a stuck outbox, tick overruns, a crash
    # loop, readiness failing, each with its expected labels and summary.
    result = promtool("test", "rules", str(ALERTS.parent / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_prometheus_config_passes_promtool():
    result = promtool("check", "config", str(COMPOSE.parent / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_summary_and_a_runbook_anchor_that_exists():
    anchors = operations_anchors()
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {
        "TouchlineConsumerLagGrowing",
        "TouchlineDLQRateHigh",
        "TouchlineOutboxStuck",
        "TouchlineSendsFailing",
        "TouchlineSendRetriesHigh",
        "TouchlineWorkerRestarting",
        "TouchlineNotReady",
        "TouchlineRulesTickOverrunning",
    }
    for rule in rules:
        ann = rule["annotations"]
        assert ann.get("summary"), f"{rule['alert']} has no summary"
        page, _, anchor = ann["runbook_url"].partition("#")
        assert page == "docs/operations.md", rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no heading #{anchor} in docs/operations.md"


def test_every_queried_metric_is_exported_by_the_code():
    exported = exported_metric_names()
    sources = promql_sources()
    assert len(sources) > 20
    missing = [(where, name) for where, expr in sources for name in metric_names_in(expr) if name not in exported]
    assert not missing, f"queried but not exported: {missing}"


def test_dashboard_loads_with_a_row_per_service():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] == "Touchline"
    rows = [p for p in dash["panels"] if p["type"] == "row"]
    assert [r["title"] for r in rows] == ["Ingest", "Rules", "Outreach", "Processes"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    # Panels belong to the row above them; every graph has a query.
    current, per_row = None, {}
    for p in sorted(dash["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"])):
        if p["type"] == "row":
            current = p["title"]
            continue
        assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]
        per_row.setdefault(current, []).append(p["title"])
    for service in ("Ingest", "Rules", "Outreach"):
        assert {"Throughput (records/s)", "Consumer lag (records)", "Batch latency"} <= set(per_row[service])
    assert any("Rejections by reason" in t for t in per_row["Ingest"])
    assert any("Signals by kind" in t for t in per_row["Rules"])
    assert any("by state" in t for t in per_row["Outreach"])
    provider = yaml.safe_load((COMPOSE.parent / "grafana" / "provisioning" / "dashboards" / "touchline.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"


def test_vendored_schemas_say_where_they_come_from():
    readme = (DEPLOY / "schemas" / "README.md").read_text()
    for name in ("compose-spec.json", "keda-scaledobject-v1alpha1.json"):
        assert (DEPLOY / "schemas" / name).is_file() and name in readme
    assert "kubernetes-validate==" in (ROOT / "pyproject.toml").read_text()
