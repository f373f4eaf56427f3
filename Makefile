# Touchline: two commands. `make run` brings the whole system up on embedded defaults;
# `make test` sets up what it needs (the venv, and chromium, promtool, a local PostgreSQL
# and axe-core through tools/install-system-deps.sh) and runs the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint install migrate system-deps test-unit test-integration test-e2e bench-ingest bench-rules bench-backtest bench-jobs bench-outreach bench-engagements bench-console bench-latency bench-api bench-health bench-content soak clean demo coverage mutation mutation-survivors fuzz

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Touchline needs Python 3.11, found " + sys.version' 
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Debian's chromium (browser tests), prometheus (promtool), a PostgreSQL on 127.0.0.1:5432
# (the suite's PostgreSQL variants; none when TOUCHLINE_TEST_POSTGRES_URL names yours) and
# the pinned axe-core (npm ci into var/a11y: the browser tests' accessibility checks),
# installed when missing;
# where it cannot install, it stops with the command to run (docs/testing.md).
system-deps:
	@tools/install-system-deps.sh

run: $(STAMP)
	$(BIN)/touchline run

migrate: $(STAMP)
	$(BIN)/touchline migrate

demo: $(STAMP)
	$(BIN)/touchline demo

# ruff (lint), mypy (types; strict on every package) and import-linter (the service
# boundaries in pyproject.toml). CI runs it before the tests.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# One tier each (docs/testing.md). The directory is the tier; tests/conftest.py marks
# each test by it, so `-m integration`, `-m e2e` and `-m "not integration"` select the same.
test-unit: $(STAMP)
	@tools/install-system-deps.sh prometheus
	$(BIN)/python -m pytest -q tests/unit

test-integration: $(STAMP)
	@tools/install-system-deps.sh postgresql
	$(BIN)/python -m pytest -q tests/integration

test-e2e: $(STAMP)
	@tools/install-system-deps.sh chromium postgresql axe-core
	$(BIN)/python -m pytest -q tests/e2e

# The whole suite with coverage, worker subprocesses included (pyproject.toml
# [tool.coverage.run]); prints the total and the figure per package, writes the HTML
# report to var/coverage/html. No gate: the figure is for reading (docs/testing.md).
COVERAGE_PACKAGES := services/ingest services/rules services/outreach services/console services/wiring services/jobs.py services/demo.py shared
coverage: $(STAMP) system-deps
	rm -rf var/coverage && mkdir -p var/coverage
	COVERAGE_FILE=$(CURDIR)/var/coverage/.coverage $(BIN)/python -m coverage run -m pytest -q $(PYTEST_ARGS); \
	status=$$?; \
	export COVERAGE_FILE=$(CURDIR)/var/coverage/.coverage; \
	$(BIN)/python -m coverage combine -q && \
	$(BIN)/python -m coverage html -q && \
	for p in $(COVERAGE_PACKAGES); do \
	  printf '%-20s %s%%\n' $$p "$$($(BIN)/python -m coverage report --include="$$p,$$p/*" --format=total)"; \
	done && \
	printf '%-20s %s%%   (HTML: var/coverage/html/index.html)\n' TOTAL "$$($(BIN)/python -m coverage report --format=total)"; \
	exit $$status

# Mutation testing of the core (mutmut 3, configured in pyproject.toml [tool.mutmut]):
# the mutants of the functions below, each run against the tests that reach it, on
# SQLite, MUTATION_CHILDREN at a time; MUTANTS='shared.auth.*' runs a subset, and for a batch of a
# few functions MUTATION_TESTS='<test files>' runs only those tests (a lower bound; faster start).
# Not in CI. Figures, how long a full run takes, accepted survivors: docs/testing.md.
MUTATION_CHILDREN ?= 3
MUTANTS_CORE := shared.auth.x_authenticate__* shared.auth.x_authorize__* \
	shared.kafka.batch_worker.x*BatchWorker*poll_once__* shared.kafka.batch_worker.x*BatchWorker*_process__* \
	shared.kafka.batch_worker.x*BatchWorker*_commit__* shared.kafka.batch_worker.x*BatchWorker*_rewind__* \
	services.ingest.service.x__split__* services.ingest.service.x__apply_traits__* \
	services.rules.signals.repository.x_claim_cooldowns__* services.rules.signals.repository.x_cooling_down__* \
	services.outreach.policy.service.x_quiet_until__* services.outreach.policy.service.x_zone__* \
	services.outreach.policy.service.x_check_contact__* services.outreach.policy.repository.x__counted__* services.outreach.policy.repository.x_contact_messages__* \
	services.outreach.playbooks.holdouts.x_holdout_bucket__* services.outreach.playbooks.holdouts.x_is_held_out__* \
	services.outreach.templates.rendering.x_render__*
# The human half (issue 25): the functions that carry its decisions. MUTANTS='$$(MUTANTS_HUMAN)'
# runs these alone.
MUTANTS_HUMAN := services.outreach.engagements.assignment.x_choose__* services.outreach.engagements.assignment.x_assign__* \
	services.outreach.engagements.availability.x_is_away__* services.outreach.engagements.availability.x_available__* \
	services.outreach.engagements.availability.x_covers__* services.outreach.engagements.timebox.x_next_reminder__* \
	services.outreach.engagements.closing.x_measure_outcome__* services.outreach.engagements.closing.x_agreement__* \
	services.outreach.playbooks.steps.open_engagement.x_escalate__* \
	services.console.session.x_csrf_ok__* services.console.session.x_session_id_of__* services.console.session.x_signed_in__* \
	services.outreach.delivery.lease.x*Lease*held__* services.outreach.delivery.lease.x*Lease*_due__* services.outreach.delivery.lease.x*Lease*renew__* \
	services.outreach.delivery.repository.x_claim_due__* services.outreach.delivery.repository.x__held__* \
	services.outreach.delivery.repository.x__write_held__* services.outreach.delivery.repository.x_renew_lease__* \
	services.outreach.delivery.repository.x_mark_sent__* services.outreach.delivery.repository.x_held_by__* \
	shared.privacy.x_needles_of__* shared.privacy.x_contains_any__* shared.privacy.x_scrub__* shared.privacy.x__scrub__* \
	services.outreach.playbooks.engine.x_sweep_conversions__* services.ingest.service.x_apply_events__* \
	services.rules.language.health.x*Scoring*points__* services.rules.language.health.x*HealthModel*label__* \
	services.rules.evaluation.segments.x_apply__* services.outreach.content.routing.x__score__* \
	services.outreach.links.tokens.x_open_token__* shared.signin.x*SignInThrottle*wait__* shared.signin.x*SignInThrottle*failed__*
MUTANTS ?= $(MUTANTS_CORE) $(MUTANTS_HUMAN)
mutation: $(STAMP)
	rm -rf mutants
	env -u CI $(BIN)/python tools/mutation.py --max-children $(MUTATION_CHILDREN) $(foreach m,$(MUTANTS),'$(m)') || true
	$(BIN)/python tools/mutation_report.py $(foreach m,$(MUTANTS),'$(m)')

mutation-survivors: $(STAMP)
	$(BIN)/python tools/mutation_report.py --diffs $(foreach m,$(MUTANTS),'$(m)')

# The API fuzz (tests/integration/services/wiring/test_api_fuzz.py) deeper than `make
# test` runs it: FUZZ_EXAMPLES examples per operation, mode and pass, on SQLite and
# PostgreSQL; FUZZ_SEED=n draws a fresh stream instead of the fixed one. Prints the case
# count per database. Not in CI (docs/testing.md, "The API fuzz").
FUZZ_EXAMPLES ?= 100
fuzz: $(STAMP)
	@tools/install-system-deps.sh postgresql
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -s tests/integration/services/wiring/test_api_fuzz.py

bench-ingest: $(STAMP)
	$(BIN)/python -m bench.bench_ingest

bench-rules: $(STAMP)
	$(BIN)/python -m bench.bench_rules

bench-backtest: $(STAMP)
	$(BIN)/python -m bench.bench_backtest

bench-jobs: $(STAMP)
	$(BIN)/python -m bench.bench_jobs

bench-outreach: $(STAMP)
	$(BIN)/python -m bench.bench_outreach

bench-console: $(STAMP)
	$(BIN)/python -m bench.bench_console

bench-engagements: $(STAMP)
	$(BIN)/python -m bench.bench_engagements

# `touchline run` on a fresh PostgreSQL database, LATENCY_RATE events/s (1,000) for LATENCY_SECONDS (60):
# event timestamp -> signal stored -> email accepted by the sink, p50/p95/p99/max (docs/performance.md).
bench-latency: $(STAMP)
	$(BIN)/python -m bench.bench_latency

# Customer health: the daily scoring of 100,000 accounts with the starter model, one account's
# explanation, validation over 10,000 accounts x 180 days; PostgreSQL and SQLite (docs/performance.md).
bench-health: $(STAMP)
	$(BIN)/python -m bench.bench_health

# Content (issue 22): 50 segments over 100,000 accounts per tick on PostgreSQL, the recommend step's
# recipients/s, GET /r/{token} through `touchline api` (closed loop 1/8/32 clients, open loop 500/s).
bench-content: $(STAMP)
	$(BIN)/python -m bench.bench_content

# `touchline run` on SQLite, then on a fresh PostgreSQL database: 1, 8, 32, 128, 512 clients on a mixed
# workload (API_BENCH_LEVELS, API_BENCH_SECONDS each): req/s, p50/p99, answers by status, /healthz p99.
bench-api: $(STAMP)
	$(BIN)/python -m bench.bench_api

# `touchline run` + the live demo for SOAK_MINUTES (default 60): RSS and lag every minute, slope per process.
soak: $(STAMP)
	$(BIN)/python -m bench.soak

clean:
	rm -rf var .pytest_cache
