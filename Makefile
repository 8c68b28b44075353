# Tallyhub: `make run` serves the gateway on the embedded default (SQLite in ./data);
# `make test` runs `make check` and then the whole suite (a short fuzz run included); `make fuzz` fuzzes the HTTP API
# for longer (FUZZ_EXAMPLES examples per operation and body strategy, FUZZ_SEED to vary the seed).
# `make check` lints, checks the format and type-checks (ruff, mypy; settings in pyproject.toml).
# All of them install what they need into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PIP_VERSION := 26.3

.PHONY: run test check fuzz dashboard bench clean-venv

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==$(PIP_VERSION)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/tallyhub init
	$(BIN)/tallyhub serve --host $${HOST:-127.0.0.1} --port $${PORT:-8080}

dashboard: $(STAMP)
	$(BIN)/tallyhub dashboard --host $${HOST:-127.0.0.1} --port $${PORT:-8501}

# The checks come first: code that does not lint, format or type-check does not land.
test: check
	$(BIN)/python -m pytest -q

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fuzz: $(STAMP)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-300} $(BIN)/python -m pytest -q tests/fuzz

# `make bench` runs every benchmark of docs/performance.md but the callgrind count (about 20 minutes:
# bash tests/benchmarks/instructions_per_request.sh). Smaller runs: e.g. `make bench REPS=1 BENCH_SECONDS=3
# BENCH_CHARGES=100000`; the shared harness's own knobs (SKIP_PG, SKIP_LAT50, QUIET_WAIT, ...) pass through the
# environment. A tiny smoke run of each benchmark is part of `make test` (tests/benchmarks/test_benchmarks_smoke.py).
BENCH_SECONDS ?= 10
BENCH_CHARGES ?= 1000000
bench: $(STAMP)
	bash tests/benchmarks/shared_bench.sh
	$(BIN)/python -m tests.benchmarks.ledger_throughput --store postgres --clients 64 --seconds $(BENCH_SECONDS)
	$(BIN)/python -m tests.benchmarks.limiter_redis -n 5000 -c 32
	$(BIN)/python -m tests.benchmarks.projection_lag --rate 1000 --seconds $(BENCH_SECONDS)
	$(BIN)/python -m tests.benchmarks.audit_scale --store sqlite --charges $(BENCH_CHARGES)

clean-venv:
	rm -rf $(VENV)
