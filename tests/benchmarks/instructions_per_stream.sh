#!/usr/bin/env bash
# Instructions per streamed chat completion of `tallyhub serve` (embedded, SQLite, credits mode)
# under callgrind, split into what a stream costs per request and per chunk (issue 21).
#
# Two mock upstreams (the shared harness's) behind two providers of one gateway: "mock" sends the
# benchmark's stream (SHORT content chunks, default 20: with the finish and the usage chunk 22
# payloads), "long" sends LONG content chunks (default 100: 102 payloads). Batches of N streams at
# c=32 alternate between the two (and a batch of N plain answers from "mock" for reference), with
# the counters zeroed before each batch and dumped after it; each figure is the whole process's
# instructions (event loop, writer, projections) divided by the batch's requests. Then
#   per chunk   = (long − short) / (LONG − SHORT)
#   per request = short − (SHORT + 2) × per chunk        (what a stream costs whatever its length)
# The mock writes a whole stream in one write (CHUNK_DELAY_MS=0, as the shared benchmark runs it),
# so a chunk here is a payload of a burst: its parsing and relaying, not an extra read or send.
#   bash tests/benchmarks/instructions_per_stream.sh [N] [REPS]     (default 200 2)
# env: SHORT, LONG (content chunks); CHUNK_DELAY_MS (the mocks' delay between chunks);
# TALLYHUB_ACCESS_LOG=off; BENCH_DIR (the shared harness); WARMUP (requests a kind, not counted,
# default 100); BENCH_SMOKE=1 (the harness with this project's venv, free ports, warm-up 5).
# Only 127.0.0.1 is used; each batch is bounded by loadgen's --max-seconds.
set -euo pipefail
N=${1:-200}; REPS=${2:-2}
SHORT=${SHORT:-20}; LONG=${LONG:-100}
here=$(cd "$(dirname "$0")/../.." && pwd)
bench=${BENCH_DIR:-$here/../shared/bench}
if [ -n "${BENCH_SMOKE:-}" ]; then
  BPY=$here/.venv/bin/python WARMUP=${WARMUP:-5}
else
  BPY=${BENCH_WORK:-${TMPDIR:-/tmp}/tallyhub-bench}/venv/bin/python
  [ -x "$BPY" ] || bash "$bench/setup.sh" >/dev/null
fi
read -r short_port long_port gw_port <<< "$("$BPY" -c 'import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')"
WARMUP=${WARMUP:-100}
th=$here/.venv/bin/tallyhub
work=$(mktemp -d)
export TALLYHUB_DATA_DIR=$work/data TALLYHUB_BILLING_MODE=credits
unset TALLYHUB_DATABASE_URL TALLYHUB_REDIS_URL
export MOCK_CHUNK_DELAY_MS=${CHUNK_DELAY_MS:-0}
MOCK_PORT=$short_port MOCK_STREAM_CHUNKS=$SHORT "$BPY" "$bench/mock_upstream.py" > "$work/mock-short.log" 2>&1 &
mocks=$!
MOCK_PORT=$long_port MOCK_STREAM_CHUNKS=$LONG "$BPY" "$bench/mock_upstream.py" > "$work/mock-long.log" 2>&1 &
mocks="$mocks $!"
gw=
trap 'kill $mocks $gw 2>/dev/null || true; rm -rf "$work"' EXIT
json_field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
"$th" init --json >/dev/null
for pair in "mock:$short_port" "long:$long_port"; do
  echo "sk-bench-upstream-0000" | "$th" providers add "${pair%%:*}" --kind openai-compatible \
    --base-url "http://127.0.0.1:${pair##*:}/v1" --api-key-stdin --timeout-connect 300 --json >/dev/null
  "$th" prices set "${pair%%:*}/mock-gpt" --input 1 --output 2 --json >/dev/null
done
"$th" accounts create bench --starter-credits 10000000 --json >/dev/null
key=$(json_field "$("$th" keys issue bench --json)" key)
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/cg.out" \
  "$here/.venv/bin/python" "$th" serve --port "$gw_port" > "$work/serve.log" 2>&1 &
gw=$!
for _ in $(seq 1 600); do curl -s -o /dev/null "http://127.0.0.1:$gw_port/health" && break; sleep 0.5; done
load() {  # load N MODEL [--stream]
  "$BPY" "$bench/loadgen.py" --url "http://127.0.0.1:$gw_port/v1/chat/completions" -n "$1" -c 32 --warmup 0 \
    --timeout 300 --max-seconds 1800 -H "Authorization: Bearer $key" --model "$2" "${@:3}" > "$work/load.out" 2>&1 \
    || { cat "$work/load.out"; echo "a request of the batch failed: its count would mean nothing"; exit 1; }
}
counted() {  # counted NAME N MODEL [--stream]: the batch's instructions per request
  callgrind_control -i on $gw >/dev/null 2>&1; callgrind_control -z $gw >/dev/null 2>&1
  load "${@:2}"
  callgrind_control -d "$1" $gw >/dev/null 2>&1; callgrind_control -i off $gw >/dev/null 2>&1
  dump=$(ls -t "$work"/cg.out* | head -1)
  echo $(($(grep -E '^(summary|totals):' "$dump" | head -1 | awk '{print $2}') / $2))
}
load "$WARMUP" mock/mock-gpt --stream; load "$WARMUP" long/mock-gpt --stream; load "$WARMUP" mock/mock-gpt
echo "batch  kind                    instructions/request"
for rep in $(seq 1 "$REPS"); do
  short=$(counted "short-$rep" "$N" mock/mock-gpt --stream)
  long=$(counted "long-$rep" "$N" long/mock-gpt --stream)
  plain=$(counted "plain-$rep" "$N" mock/mock-gpt)
  chunk=$(((long - short) / (LONG - SHORT)))
  printf '%-6s %-23s %d\n' "$rep" "stream $((SHORT + 2)) chunks" "$short" "$rep" "stream $((LONG + 2)) chunks" "$long" \
    "$rep" "plain" "$plain" "$rep" "per chunk" "$chunk" "$rep" "stream, per request" $((short - (SHORT + 2) * chunk))
done
