# Tallyhub: `make run` serves the gateway on the embedded default (SQLite in ./data);
# `make test` runs the whole suite. Both install what they need into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PIP_VERSION := 26.3

.PHONY: run test dashboard bench clean-venv

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

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	bash tests/benchmarks/shared_bench.sh
	$(BIN)/python -m tests.benchmarks.ledger_throughput --store postgres --clients 64 --seconds 10
	$(BIN)/python -m tests.benchmarks.audit_scale --store sqlite --charges 1000000

clean-venv:
	rm -rf $(VENV)
