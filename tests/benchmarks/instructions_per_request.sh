#!/usr/bin/env bash
# Instructions per request of `tallyhub serve` (embedded, SQLite, credits mode) under callgrind:
# a key with rate limits (an RPM, a TPM and a parallel limit, never reached) against a key
# without, on the same gateway, in alternating batches. Callgrind counts instructions, not
# time, so the figures hold on a busy machine where a wall-clock benchmark cannot tell 5 %.
#   bash tests/benchmarks/instructions_per_request.sh [N] [REPS]    (N requests a batch, c=32; default 400 3)
# env: STREAM=1 for streams; TALLYHUB_ACCESS_LOG=off to leave the access log out; BENCH_DIR (the
# shared harness, for its mock upstream and loadgen); WARMUP (200 requests a key, not counted).
# BENCH_SMOKE=1 (what tests/benchmarks/test_benchmarks_smoke.py runs, e.g. with N=10 REPS=1): the
# harness runs with this project's venv (no network, no harness venv), with a warm-up of 5. Ports are free ones.
# Only 127.0.0.1 is used; each batch is bounded by loadgen's --max-seconds. Takes about 3 minutes a
# batch under callgrind.
set -euo pipefail
N=${1:-400}; REPS=${2:-3}
here=$(cd "$(dirname "$0")/../.." && pwd)
bench=${BENCH_DIR:-$here/../shared/bench}
if [ -n "${BENCH_SMOKE:-}" ]; then
  BPY=$here/.venv/bin/python WARMUP=${WARMUP:-5}
else
  BPY=${BENCH_WORK:-${TMPDIR:-/tmp}/tallyhub-bench}/venv/bin/python
  [ -x "$BPY" ] || bash "$bench/setup.sh" >/dev/null
fi
# free ports, so that two counts (two trees, say) can run side by side
read -r mock_port gw_port <<< "$("$BPY" -c 'import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')"
WARMUP=${WARMUP:-200}
th=$here/.venv/bin/tallyhub
work=$(mktemp -d)
export TALLYHUB_DATA_DIR=$work/data TALLYHUB_BILLING_MODE=credits
unset TALLYHUB_DATABASE_URL TALLYHUB_REDIS_URL
MOCK_PORT=$mock_port "$BPY" "$bench/mock_upstream.py" > "$work/mock.log" 2>&1 &
mock=$!
gw=
trap 'kill $mock $gw 2>/dev/null || true; rm -rf "$work"' EXIT
json_field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
"$th" init --json >/dev/null
echo "sk-bench-upstream-0000" | "$th" providers add mock --kind openai-compatible \
  --base-url "http://127.0.0.1:$mock_port/v1" --api-key-stdin --json >/dev/null
"$th" prices set mock/mock-gpt --input 1 --output 2 --json >/dev/null
"$th" accounts create bench --starter-credits 10000000 --json >/dev/null
plain=$(json_field "$("$th" keys issue bench --json)" key)
issued=$("$th" keys issue bench --name limited --json)
limited=$(json_field "$issued" key)
"$th" keys limits "$(json_field "$issued" id)" --rpm 1000000 --tpm 1000000000 --max-parallel 1000 --json >/dev/null
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/cg.out" \
  "$here/.venv/bin/python" "$th" serve --port $gw_port > "$work/serve.log" 2>&1 &
gw=$!
for _ in $(seq 1 600); do curl -s -o /dev/null "http://127.0.0.1:$gw_port/health" && break; sleep 0.5; done
flag=""; [ "${STREAM:-0}" = 1 ] && flag=--stream
load() {
  "$BPY" "$bench/loadgen.py" --url "http://127.0.0.1:$gw_port/v1/chat/completions" -n "$1" -c 32 --warmup 0 \
    --timeout 120 --max-seconds 900 -H "Authorization: Bearer $2" --model mock/mock-gpt $flag > "$work/load.out" 2>&1 \
    || { cat "$work/load.out"; echo "a request of the batch failed: its count would mean nothing"; exit 1; }
}
load "$WARMUP" "$plain"; load "$WARMUP" "$limited"   # warm-up, not counted
echo "batch  key      instructions/request"
for rep in $(seq 1 "$REPS"); do
  for which in plain limited; do
    key=$plain; [ $which = limited ] && key=$limited
    callgrind_control -i on $gw >/dev/null; callgrind_control -z $gw >/dev/null
    load "$N" "$key"
    callgrind_control -d "$which-$rep" $gw >/dev/null; callgrind_control -i off $gw >/dev/null
    dump=$(ls -t "$work"/cg.out* | head -1)
    total=$(grep -E '^(summary|totals):' "$dump" | head -1 | awk '{print $2}')
    printf '%-6s %-8s %d\n' "$rep" "$which" $((total / N))
  done
done
