# Touchline: two commands. `make run` brings the whole system up on embedded defaults;
# `make test` sets up what it needs and runs the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test install migrate test-unit test-integration bench-ingest bench-rules bench-backtest bench-jobs bench-outreach bench-engagements bench-console clean demo

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

clean:
	rm -rf var .pytest_cache
