# One entry point for newcomers and CI. Everything runs from the project's own .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help venv lock test test-servers lint format demo serve load bench-ingest bench-load bench-readers bench-s3 bench-actions bench-dashboard clean

help:
	@echo "make test          set up .venv and run the whole test suite"
	@echo "make demo          set up .venv, receive sample events, load them, show the history"
	@echo "make lock          re-resolve requirements.lock from pyproject.toml"
	@echo "make serve         receiver, dagster dev and the dashboard together (Ctrl-C stops all)"
	@echo "make lint          ruff check and format check"
	@echo "make bench-ingest  receiver throughput/latency benchmark"
	@echo "make bench-load    1M-event load + dimension benchmark"
	@echo "make bench-readers reader query latency, idle and during a 1M-event load"
	@echo "make bench-s3      reading many small landed objects from S3 (moto, added latency)"
	@echo "make bench-actions welcome e-mails to 10,000 new customers through the outbox"
	@echo "make bench-dashboard dashboard queries and first paint on a 1M-event warehouse"

venv: $(STAMP)

# Re-install when the project's dependencies change; the stamp keeps repeated runs instant.
# requirements.lock pins every package to the versions the suite passed with (make lock).
LOCK := requirements.lock
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) -e '.[dev]'
	@touch $(STAMP)

# Resolve the lock again from pyproject.toml (newest versions its ranges allow); then make test.
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet pip-tools
	$(BIN)/pip-compile --quiet --upgrade --extra dev --strip-extras --no-emit-index-url \
		--no-emit-find-links --output-file $(LOCK) pyproject.toml

# What the tests start on loopback (a throwaway Postgres cluster, headless Chromium), from
# Debian's packages when missing; without them those tests are skipped with the reason.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo -n)
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends

test-servers:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
		{ $(SUDO) apt-get update -qq && $(APT_INSTALL) postgresql >/dev/null; } || \
		echo "postgresql could not be installed: the scale-out tests will be skipped"
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
		{ $(SUDO) apt-get update -qq && $(APT_INSTALL) chromium >/dev/null; } || \
		echo "chromium could not be installed: the dashboard's browser tests will be skipped"

test: $(STAMP) test-servers
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: $(STAMP)
	$(BIN)/flavours demo

serve: $(STAMP)
	$(BIN)/flavours dev

load: $(STAMP)
	$(BIN)/flavours load

bench-ingest: $(STAMP)
	$(BIN)/python bench/bench_ingest.py

bench-load: $(STAMP)
	$(BIN)/python bench/bench_load.py

bench-readers: $(STAMP)
	$(BIN)/python bench/bench_readers.py

bench-s3: $(STAMP)
	$(BIN)/python bench/bench_s3_fetch.py

bench-actions: $(STAMP)
	$(BIN)/python bench/bench_actions.py

bench-dashboard: $(STAMP)
	$(BIN)/python bench/bench_dashboard.py

clean:
	rm -rf data .pytest_cache .ruff_cache
