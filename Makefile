# Touchline: two commands. `make run` brings the whole system up on embedded defaults;
# `make test` sets up what it needs and runs the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test install migrate test-unit test-integration bench-ingest bench-rules bench-backtest bench-jobs bench-outreach bench-engagements clean demo coverage mutation

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Touchline needs Python 3.11, found " + sys.version' 
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/touchline run

migrate: $(STAMP)
	$(BIN)/touchline migrate

demo: $(STAMP)
	$(BIN)/touchline demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration"

test-integration: $(STAMP)
	$(BIN)/python -m pytest -q -m integration

# The whole suite with coverage, worker subprocesses included (pyproject.toml
# [tool.coverage.run]); prints the total and the figure per package, writes the HTML
# report to var/coverage/html. No gate: the figure is for reading (docs/testing.md).
COVERAGE_PACKAGES := services/ingest services/rules services/outreach services/cli.py services/demo.py shared
coverage: $(STAMP)
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

bench-engagements: $(STAMP)
	$(BIN)/python -m bench.bench_engagements

clean:
	rm -rf var .pytest_cache
