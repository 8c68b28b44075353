#!/usr/bin/env bash
# Measure `tallyhub serve` with the shared load harness (../shared/bench), side by side with
# its baselines (direct, pass-throughs, LiteLLM when installed), in one interleaved run.
# Usage: bash tests/benchmarks/shared_bench.sh [sqlite|postgres]   (REPS, SCENARIOS, MODEL pass through)
# Only 127.0.0.1 is used; every loadgen run is bounded by the harness.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
bench=${BENCH_DIR:-$here/../shared/bench}
store=${1:-sqlite}
export BENCH_WORK=${BENCH_WORK:-${TMPDIR:-/tmp}/tallyhub-bench}
port=${TALLYHUB_BENCH_PORT:-8090}
data=$(mktemp -d)
export TALLYHUB_DATA_DIR=$data TALLYHUB_BILLING_MODE=credits
if [ "$store" = postgres ]; then
  schema=th_bench_$$
  psql -q -h 127.0.0.1 -U postgres -d test -c "CREATE SCHEMA $schema"
  export TALLYHUB_DATABASE_URL="postgresql://postgres@127.0.0.1:5432/test?schema=$schema"
fi
th="$here/.venv/bin/tallyhub"

bash "$bench/setup.sh" >/dev/null
bash "$bench/start.sh"
cleanup() {
  [ -f "$BENCH_WORK/tallyhub.pid" ] && kill "$(cat "$BENCH_WORK/tallyhub.pid")" 2>/dev/null || true
  rm -f "$BENCH_WORK/tallyhub.pid"
  bash "$bench/stop.sh" >/dev/null 2>&1 || true
  [ "$store" = postgres ] && psql -q -h 127.0.0.1 -U postgres -d test -c "DROP SCHEMA $schema CASCADE" || true
  rm -rf "$data"
}
trap cleanup EXIT

"$th" init --json >/dev/null
echo "sk-bench-upstream-0000" | "$th" providers add mock --kind openai-compatible --base-url http://127.0.0.1:8100/v1 --api-key-stdin --json >/dev/null
for model in mock-gpt mock-gpt-lat50; do "$th" prices set "mock/$model" --input 1 --output 2 --json >/dev/null; done
"$th" accounts create bench --starter-credits 1000000000 --json >/dev/null
key=$("$th" keys issue bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')

taskset -c "${GW_CPU:-1}" "$th" serve --port "$port" > "$BENCH_WORK/tallyhub.log" 2>&1 &
echo $! > "$BENCH_WORK/tallyhub.pid"
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/v1/models" && break; sleep 0.1; done

targets=$BENCH_WORK/targets-tallyhub.txt
grep -v '^#' "$bench/targets.txt" > "$targets"
echo "tallyhub-$store  http://127.0.0.1:$port/v1/chat/completions  tallyhub.pid  Authorization: Bearer $key" >> "$targets"
model=${MODEL:-mock-gpt}
env "MODEL_tallyhub_$store=mock/$model" TARGETS="$targets" REPS="${REPS:-3}" bash "$bench/bench.sh"
