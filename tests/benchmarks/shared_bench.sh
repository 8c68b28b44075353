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
#   as targets tallyhub-sqlite-limits and tallyhub-pg-limits beside the unlimited key; TALLYHUB_ACCESS_LOG=off)
# Only 127.0.0.1 is used; every loadgen run is bounded by the harness.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
bench=${BENCH_DIR:-$here/../shared/bench}
export BENCH_WORK=${BENCH_WORK:-${TMPDIR:-/tmp}/tallyhub-bench}
th="$here/.venv/bin/tallyhub"
schema=th_bench_$$
redis_prefix=th-bench-$$
pids=()

bash "$bench/setup.sh" >/dev/null
bash "$bench/start.sh"
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -f "$BENCH_WORK"/tallyhub-*.pid
  bash "$bench/stop.sh" >/dev/null 2>&1 || true
  psql -q -h 127.0.0.1 -U postgres -d test -c "DROP SCHEMA IF EXISTS $schema CASCADE" 2>/dev/null || true
  rm -rf "$BENCH_WORK/tallyhub-data"
}
trap cleanup EXIT
rm -rf "$BENCH_WORK/tallyhub-data"

# set_up NAME: init a store for $TALLYHUB_* in the environment; prints the user key
set_up() {
  "$th" init --json >/dev/null
  echo "sk-bench-upstream-0000" | "$th" providers add mock --kind openai-compatible \
    --base-url http://127.0.0.1:8100/v1 --api-key-stdin --json >/dev/null
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
  for _ in $(seq 1 150); do curl -s -o /dev/null "http://127.0.0.1:$port/v1/models" && return; sleep 0.1; done
  echo "$name did not start; see $BENCH_WORK/$name.log"; exit 1
}

baselines=$BENCH_WORK/targets-baselines.txt
grep -v '^#' "$bench/targets.txt" > "$baselines"
ratios() { python3 "$here/tests/benchmarks/ratios.py" "$(ls -t "$BENCH_WORK"/results/*.jsonl | head -1)"; }
lat50="lat50-ns-c32:32:1500: lat50-st-c32:32:600:--stream"

# Phase 1, embedded mode: SQLite, projections and sweeps inside serve.
export TALLYHUB_BILLING_MODE=credits TALLYHUB_DATA_DIR=$BENCH_WORK/tallyhub-data/sqlite
unset TALLYHUB_DATABASE_URL TALLYHUB_REDIS_URL
keys=$(set_up); key=$(sed -n 1p <<< "$keys"); limited=$(sed -n 2p <<< "$keys")
serve tallyhub-sqlite 8090 "${GW_CPU:-1}"
targets=$BENCH_WORK/targets-embedded.txt
cp "$baselines" "$targets"
echo "tallyhub-sqlite  http://127.0.0.1:8090/v1/chat/completions  tallyhub-sqlite.pid  Authorization: Bearer $key" >> "$targets"
add_limited tallyhub-sqlite 8090 "$targets"
MODEL_tallyhub_sqlite=mock/mock-gpt TARGETS="$targets" REPS="${REPS:-3}" bash "$bench/bench.sh" | tee "$BENCH_WORK/bench-embedded.txt"
ratios
if [ -z "${SKIP_LAT50:-}" ]; then
  MODEL=mock-gpt-lat50 MODEL_tallyhub_sqlite=mock/mock-gpt-lat50 SCENARIOS="$lat50" ONLY='passthru-aiohttp|litellm|tallyhub|direct' \
    TARGETS="$targets" REPS="${REPS:-3}" bash "$bench/bench.sh" | tee "$BENCH_WORK/bench-embedded-50ms.txt"
  ratios
fi
kill "$(cat "$BENCH_WORK/tallyhub-sqlite.pid")"; rm -f "$BENCH_WORK/tallyhub-sqlite.pid"

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
  serve tallyhub-pg 8091 "${GW_CPU:-1}"
  serve tallyhub-pg-w2 8092 any --workers 2
  targets=$BENCH_WORK/targets-server.txt
  grep -E '^(direct|passthru-aiohttp) ' "$baselines" > "$targets"
  echo "tallyhub-pg  http://127.0.0.1:8091/v1/chat/completions  tallyhub-pg.pid  Authorization: Bearer $key" >> "$targets"
  add_limited tallyhub-pg 8091 "$targets"
  echo "tallyhub-pg-w2  http://127.0.0.1:8092/v1/chat/completions  tallyhub-pg-w2.pid  Authorization: Bearer $key" >> "$targets"
  export MAX_FOREIGN=0.5 RETRIES=${RETRIES:-1}  # the 2-worker gateway's children count as foreign too
  MODEL_tallyhub_pg=mock/mock-gpt MODEL_tallyhub_pg_w2=mock/mock-gpt TARGETS="$targets" REPS="${REPS:-3}" \
    bash "$bench/bench.sh" | tee "$BENCH_WORK/bench-server.txt"
  ratios
  if [ -z "${SKIP_LAT50:-}" ]; then
    MODEL=mock-gpt-lat50 MODEL_tallyhub_pg=mock/mock-gpt-lat50 MODEL_tallyhub_pg_w2=mock/mock-gpt-lat50 \
      SCENARIOS="$lat50" TARGETS="$targets" REPS="${REPS:-3}" bash "$bench/bench.sh" | tee "$BENCH_WORK/bench-server-50ms.txt"
    ratios
  fi
fi
