#!/usr/bin/env bash
# Measure `tallyhub serve` with the shared load harness (../shared/bench), side by side with its
# baselines (direct, the bare pass-throughs, LiteLLM when its venv exists), in one interleaved run:
#   tallyhub-sqlite   embedded mode (SQLite, projections in the process), 1 worker, CPU 1
#   tallyhub-pg       server mode (PostgreSQL + Redis, projections in a `tallyhub worker`), 1 worker, CPU 1
#   tallyhub-pg-w2    the same with `serve --workers 2` (not pinned; its CPU figure is the parent's only)
# Embedded and server mode run one after the other, each beside the baselines, so neither's
# background work (pollers, PostgreSQL) counts against the other's runs.
# Scenarios: non-stream and stream (22 chunks), c=1 and c=32, upstream 0 ms; then c=32 with the
# upstream answering after 50 ms. Every figure is also printed as a ratio to the pass-through.
# Usage: bash tests/benchmarks/shared_bench.sh      (env: REPS, ONLY, SKIP_LAT50=1, SKIP_PG=1, SCENARIOS,
#   BENCH_LIMITS=rpm,tpm,max-parallel: also measure a second key of the same account with those rate limits,
#   as targets tallyhub-sqlite-limits and tallyhub-pg-limits beside the unlimited key; TALLYHUB_ACCESS_LOG=off,
#   LAT50_SCENARIOS for the 50 ms-upstream scenarios, GW_CPU the gateways' CPU or "any", SKIP_W2=1 leaves out
#   --workers 2)
# BEFORE_TREE=DIR: also measure the Tallyhub in DIR (a checkout of an earlier commit, e.g. a `git worktree`;
#   run with this project's venv and PYTHONPATH=DIR) as targets tallyhub-sqlite-before and tallyhub-pg-before,
#   each with a store of its own, pinned beside the current build: the two builds alternate within every
#   repetition, so a before/after comparison is not skewed by the machine's load drifting between two runs.
# BENCH_SMOKE=1: a smoke run of a few seconds a phase, without network or the harness venv (what
#   tests/benchmarks/test_benchmarks_smoke.py runs): the harness's mock upstream, the aiohttp pass-through
#   and the Tallyhub targets run on free ports with this project's venv, in a BENCH_WORK of their own that
#   is removed afterwards; one repetition of tiny scenarios, no LiteLLM and no httpx pass-through, gateways
#   not pinned, no run discarded as contaminated, and no quiet wait before a run (the harness is used through
#   a directory of links to its files in which quiet_wait.py returns at once). Every size stays overridable.
# Only 127.0.0.1 is used; every loadgen run is bounded by the harness.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
bench=${BENCH_DIR:-$here/../shared/bench}
smoke=${BENCH_SMOKE:-}
# free_ports N: N distinct free ports on 127.0.0.1 (held open together while the kernel picks them)
free_ports() {
  python3 -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}
if [ -n "$smoke" ]; then
  smoke_work=$(mktemp -d "${TMPDIR:-/tmp}/tallyhub-bench-smoke.XXXXXX")
  export BENCH_WORK=$smoke_work
  ln -s "$here/.venv" "$BENCH_WORK/venv"  # the harness's python: this venv has all it imports
  mkdir "$BENCH_WORK/harness"
  for file in "$bench"/*; do [ "${file##*/}" = quiet_wait.py ] || ln -s "$file" "$BENCH_WORK/harness/"; done
  echo 'print("quiet_wait: smoke run, not waiting")' > "$BENCH_WORK/harness/quiet_wait.py"
  bench=$BENCH_WORK/harness
  export REPS=${REPS:-1} WARMUP=${WARMUP:-5} RETRIES=${RETRIES:-0} MAX_FOREIGN=${MAX_FOREIGN:-1000}
  export SCENARIOS=${SCENARIOS:-"ns-c1:1:10: st-c2:2:10:--stream"}
  LAT50_SCENARIOS=${LAT50_SCENARIOS:-"lat50-ns-c2:2:4:"}
  GW_CPU=${GW_CPU:-any}
  read -r mock_port passthru_port port_sqlite port_pg port_pg_w2 port_sqlite_b port_pg_b <<< "$(free_ports 7)"
else
  export BENCH_WORK=${BENCH_WORK:-${TMPDIR:-/tmp}/tallyhub-bench}
  mock_port=8100 port_sqlite=8090 port_pg=8091 port_pg_w2=8092 port_sqlite_b=8093 port_pg_b=8094
fi
th="$here/.venv/bin/tallyhub"
schema=th_bench_$$
redis_prefix=th-bench-$$
before=${BEFORE_TREE:-}
if [ -n "$before" ]; then before=$(cd "$before" && pwd); fi
pids=()

# wait_up NAME URL: poll until URL answers (at most 60 s: a busy machine starts `serve --workers 2` slowly)
wait_up() {
  for _ in $(seq 1 600); do curl -s -o /dev/null "$2" && return; sleep 0.1; done
  echo "$1 did not start; see $BENCH_WORK/$1.log"; exit 1
}

# start_smoke: the mock upstream and the aiohttp pass-through on this run's own ports (start.sh's are fixed)
start_smoke() {
  local py=$BENCH_WORK/venv/bin/python
  MOCK_PORT=$mock_port "$py" "$bench/mock_upstream.py" > "$BENCH_WORK/mock.log" 2>&1 &
  pids+=($!); echo $! > "$BENCH_WORK/mock.pid"
  PASSTHRU_CLIENT=aiohttp PASSTHRU_PORT=$passthru_port UPSTREAM=http://127.0.0.1:$mock_port \
    "$py" "$bench/passthru.py" > "$BENCH_WORK/passthru-aiohttp.log" 2>&1 &
  pids+=($!); echo $! > "$BENCH_WORK/passthru-aiohttp.pid"
  wait_up mock "http://127.0.0.1:$mock_port/health"
  wait_up passthru-aiohttp "http://127.0.0.1:$passthru_port/"
}

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -f "$BENCH_WORK"/tallyhub-*.pid
  bash "$bench/stop.sh" >/dev/null 2>&1 || true
  for s in "$schema" "${schema}_before"; do
    psql -q -h 127.0.0.1 -U postgres -d test -c "DROP SCHEMA IF EXISTS $s CASCADE" 2>/dev/null || true
  done
  rm -rf "$BENCH_WORK/tallyhub-data"
  if [ -n "$smoke" ]; then rm -rf "$smoke_work"; fi  # its venv is a symlink: rm removes the link only
}
trap cleanup EXIT
if [ -n "$smoke" ]; then
  start_smoke
else
  bash "$bench/setup.sh" >/dev/null
  bash "$bench/start.sh"
fi
rm -rf "$BENCH_WORK/tallyhub-data"

# set_up NAME: init a store for $TALLYHUB_* in the environment; prints the user key
set_up() {
  "$th" init --json >/dev/null
  echo "sk-bench-upstream-0000" | "$th" providers add mock --kind openai-compatible \
    --base-url "http://127.0.0.1:$mock_port/v1" --api-key-stdin --json >/dev/null
  for model in mock-gpt mock-gpt-lat50; do "$th" prices set "mock/$model" --input 1 --output 2 --json >/dev/null; done
  "$th" accounts create bench --starter-credits 10000000 --json >/dev/null  # the largest one movement (domain/bounds.py)
  local issued; issued=$("$th" keys issue bench --json)
  python3 -c 'import json,sys; print(json.loads(sys.argv[1])["key"])' "$issued"
  if [ -n "${BENCH_LIMITS:-}" ]; then  # e.g. "1000000,1000000000,1000": rpm,tpm,max-parallel, set high enough never to refuse
    # a second key of the same account, with the limits: measured as a target of its own, side by side
    IFS=, read -r rpm tpm par <<< "$BENCH_LIMITS"
    issued=$("$th" keys issue bench --name limited --json)
    "$th" keys limits "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["id"])' "$issued")" \
      --rpm "$rpm" --tpm "$tpm" --max-parallel "$par" --json >/dev/null
    python3 -c 'import json,sys; print(json.loads(sys.argv[1])["key"])' "$issued"
  fi
}

# add_limited NAME PORT TARGETS: with BENCH_LIMITS, a target NAME-limits on the same gateway with the limited key
add_limited() {
  if [ -n "${BENCH_LIMITS:-}" ]; then
    echo "$1-limits  http://127.0.0.1:$2/v1/chat/completions  $1.pid  Authorization: Bearer $limited" >> "$3"
    export "MODEL_${1//-/_}_limits=mock/mock-gpt"
  fi
}

# serve NAME PORT CPU [serve args]: start a gateway for the current environment
serve() {
  local name=$1 port=$2 cpu=$3; shift 3
  if [ "$cpu" = any ]; then "$th" serve --port "$port" "$@" > "$BENCH_WORK/$name.log" 2>&1 &
  else taskset -c "$cpu" "$th" serve --port "$port" "$@" > "$BENCH_WORK/$name.log" 2>&1 & fi
  pids+=($!); echo $! > "$BENCH_WORK/$name.pid"
  wait_up "$name" "http://127.0.0.1:$port/v1/models"
}

baselines=$BENCH_WORK/targets-baselines.txt
if [ -n "$smoke" ]; then
  printf '%s\n' "direct  http://127.0.0.1:$mock_port/v1/chat/completions  -" \
    "passthru-aiohttp  http://127.0.0.1:$passthru_port/v1/chat/completions  passthru-aiohttp.pid" > "$baselines"
else
  grep -v '^#' "$bench/targets.txt" > "$baselines"
fi
ratios() { python3 "$here/tests/benchmarks/ratios.py" "$(ls -t "$BENCH_WORK"/results/*.jsonl | head -1)"; }
lat50=${LAT50_SCENARIOS:-"lat50-ns-c32:32:1500: lat50-st-c32:32:600:--stream"}

# Phase 1, embedded mode: SQLite, projections and sweeps inside serve.
export TALLYHUB_BILLING_MODE=credits TALLYHUB_DATA_DIR=$BENCH_WORK/tallyhub-data/sqlite
unset TALLYHUB_DATABASE_URL TALLYHUB_REDIS_URL
keys=$(set_up); key=$(sed -n 1p <<< "$keys"); limited=$(sed -n 2p <<< "$keys")
serve tallyhub-sqlite "$port_sqlite" "${GW_CPU:-1}"
targets=$BENCH_WORK/targets-embedded.txt
cp "$baselines" "$targets"
echo "tallyhub-sqlite  http://127.0.0.1:$port_sqlite/v1/chat/completions  tallyhub-sqlite.pid  Authorization: Bearer $key" >> "$targets"
add_limited tallyhub-sqlite "$port_sqlite" "$targets"
if [ -n "$before" ]; then  # the earlier build: its own store, set up and served by its own code
  key_b=$(PYTHONPATH=$before TALLYHUB_DATA_DIR=$BENCH_WORK/tallyhub-data/sqlite-before set_up | sed -n 1p)
  PYTHONPATH=$before TALLYHUB_DATA_DIR=$BENCH_WORK/tallyhub-data/sqlite-before \
    serve tallyhub-sqlite-before "$port_sqlite_b" "${GW_CPU:-1}"
  echo "tallyhub-sqlite-before  http://127.0.0.1:$port_sqlite_b/v1/chat/completions  tallyhub-sqlite-before.pid  Authorization: Bearer $key_b" >> "$targets"
fi
MODEL_tallyhub_sqlite_before=mock/mock-gpt MODEL_tallyhub_sqlite=mock/mock-gpt TARGETS="$targets" REPS="${REPS:-3}" bash "$bench/bench.sh" | tee "$BENCH_WORK/bench-embedded.txt"
ratios
if [ -z "${SKIP_LAT50:-}" ]; then
  MODEL=mock-gpt-lat50 MODEL_tallyhub_sqlite=mock/mock-gpt-lat50 MODEL_tallyhub_sqlite_before=mock/mock-gpt-lat50 SCENARIOS="$lat50" ONLY='passthru-aiohttp|litellm|tallyhub|direct' \
    TARGETS="$targets" REPS="${REPS:-3}" bash "$bench/bench.sh" | tee "$BENCH_WORK/bench-embedded-50ms.txt"
  ratios
fi
for name in tallyhub-sqlite tallyhub-sqlite-before; do
  if [ -f "$BENCH_WORK/$name.pid" ]; then kill "$(cat "$BENCH_WORK/$name.pid")"; rm -f "$BENCH_WORK/$name.pid"; fi
done

# Phase 2, server mode: PostgreSQL + Redis, projections and sweeps in a `tallyhub worker`.
# PostgreSQL, Redis and the worker are part of the system under test but not of the watched
# gateway process, so their CPU counts as "foreign": the contamination bar is raised to 50 %.
if [ -z "${SKIP_PG:-}" ]; then
  psql -q -h 127.0.0.1 -U postgres -d test -c "CREATE SCHEMA $schema"
  export TALLYHUB_DATA_DIR=$BENCH_WORK/tallyhub-data/pg
  export TALLYHUB_DATABASE_URL="postgresql://postgres@127.0.0.1:5432/test?schema=$schema"
  export TALLYHUB_REDIS_URL="redis://127.0.0.1:6379/0" TALLYHUB_REDIS_PREFIX=$redis_prefix
  keys=$(set_up); key=$(sed -n 1p <<< "$keys"); limited=$(sed -n 2p <<< "$keys")
  "$th" worker > "$BENCH_WORK/tallyhub-worker.log" 2>&1 &
  pids+=($!)
  serve tallyhub-pg "$port_pg" "${GW_CPU:-1}"
  [ -n "${SKIP_W2:-}" ] || serve tallyhub-pg-w2 "$port_pg_w2" any --workers 2
  targets=$BENCH_WORK/targets-server.txt
  grep -E '^(direct|passthru-aiohttp) ' "$baselines" > "$targets"
  echo "tallyhub-pg  http://127.0.0.1:$port_pg/v1/chat/completions  tallyhub-pg.pid  Authorization: Bearer $key" >> "$targets"
  add_limited tallyhub-pg "$port_pg" "$targets"
  [ -n "${SKIP_W2:-}" ] ||
    echo "tallyhub-pg-w2  http://127.0.0.1:$port_pg_w2/v1/chat/completions  tallyhub-pg-w2.pid  Authorization: Bearer $key" >> "$targets"
  if [ -n "$before" ]; then  # the earlier build: its own schema, Redis prefix, worker and serve
    psql -q -h 127.0.0.1 -U postgres -d test -c "CREATE SCHEMA ${schema}_before"
    before_env=(PYTHONPATH="$before" TALLYHUB_DATA_DIR="$BENCH_WORK/tallyhub-data/pg-before"
      TALLYHUB_DATABASE_URL="postgresql://postgres@127.0.0.1:5432/test?schema=${schema}_before"
      TALLYHUB_REDIS_PREFIX="$redis_prefix-before")
    key_b=$(export "${before_env[@]}"; set_up | sed -n 1p)
    env "${before_env[@]}" "$th" worker > "$BENCH_WORK/tallyhub-worker-before.log" 2>&1 &
    pids+=($!)
    (export "${before_env[@]}"; serve tallyhub-pg-before "$port_pg_b" "${GW_CPU:-1}")
    pids+=("$(cat "$BENCH_WORK/tallyhub-pg-before.pid")")
    echo "tallyhub-pg-before  http://127.0.0.1:$port_pg_b/v1/chat/completions  tallyhub-pg-before.pid  Authorization: Bearer $key_b" >> "$targets"
  fi
  [ -n "$smoke" ] || export MAX_FOREIGN=0.5  # the 2-worker gateway's children count as foreign too
  export RETRIES=${RETRIES:-1}
  MODEL_tallyhub_pg=mock/mock-gpt MODEL_tallyhub_pg_w2=mock/mock-gpt MODEL_tallyhub_pg_before=mock/mock-gpt TARGETS="$targets" REPS="${REPS:-3}" \
    bash "$bench/bench.sh" | tee "$BENCH_WORK/bench-server.txt"
  ratios
  if [ -z "${SKIP_LAT50:-}" ]; then
    MODEL=mock-gpt-lat50 MODEL_tallyhub_pg=mock/mock-gpt-lat50 MODEL_tallyhub_pg_w2=mock/mock-gpt-lat50 \
      MODEL_tallyhub_pg_before=mock/mock-gpt-lat50 \
      SCENARIOS="$lat50" TARGETS="$targets" REPS="${REPS:-3}" bash "$bench/bench.sh" | tee "$BENCH_WORK/bench-server-50ms.txt"
    ratios
  fi
fi
