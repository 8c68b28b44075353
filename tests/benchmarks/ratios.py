"""Every Tallyhub figure of one shared-harness run as a ratio to the baselines measured in
the same run: RPS ÷ the aiohttp pass-through's and ÷ LiteLLM's, added p50 over the direct
call, time to first byte, and gateway CPU per request.

    python3 tests/benchmarks/ratios.py $BENCH_WORK/results/run-….jsonl

Two builds, back to back (each build's results files: every phase of one shared_bench.sh run),
one row per Tallyhub figure with both builds' ratios, each to its own run's baselines:

    python3 tests/benchmarks/ratios.py --before run-1.jsonl run-2.jsonl --after run-3.jsonl run-4.jsonl

or both builds in one run (shared_bench.sh's BEFORE_TREE: a target NAME-before beside each NAME):

    python3 tests/benchmarks/ratios.py --ab run-1.jsonl run-2.jsonl

Medians over the clean (not contaminated) repetitions; a missing baseline prints "-".
"""

import json
import statistics
import sys
from collections import defaultdict

PASSTHRU, LITELLM, DIRECT = "passthru-aiohttp", "litellm", "direct"


def medians(path: str) -> dict[tuple[str, str], dict[str, float | None]]:
    runs: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for line in open(path):
        result = json.loads(line)
        target, scenario, *_ = result["label"].split("|")
        if not result.get("contaminated"):
            runs[(target, scenario)].append(result)

    def median(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    return {
        key: {
            "rps": median([r["rps"] for r in rs]),
            "p50": median([r["lat_ms"]["p50"] for r in rs]),
            "ttfb": median([(r.get("ttfb_ms") or {}).get("p50") for r in rs]),
            "cpu": median([(r.get("cpu_ms_per_req") or {}).get("gw") for r in rs]),
        }
        for key, rs in runs.items()
    }


def main(path: str) -> None:
    found = medians(path)
    scenarios = sorted({scenario for _, scenario in found})
    print(
        "\n| scenario | target | RPS | × pass-through | × LiteLLM | +p50 ms vs direct | TTFB p50 ms | gw CPU ms/req |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for scenario in scenarios:
        base = {name: found.get((name, scenario), {}) for name in (PASSTHRU, LITELLM, DIRECT)}
        for (target, s), m in sorted(found.items()):
            if s != scenario or not target.startswith("tallyhub"):
                continue

            def ratio(other: dict) -> str:
                return f"{m['rps'] / other['rps']:.2f}×" if m["rps"] and other.get("rps") else "-"

            added = (
                f"{m['p50'] - base[DIRECT]['p50']:+.2f}"
                if m["p50"] is not None and base[DIRECT].get("p50") is not None
                else "-"
            )
            ttfb = "-" if m["ttfb"] is None else f"{m['ttfb']:.2f}"
            cpu = "-" if m["cpu"] is None else f"{m['cpu']:.2f}"
            print(
                f"| {scenario} | {target} | {m['rps'] or 0:,.0f} | {ratio(base[PASSTHRU])} | {ratio(base[LITELLM])} "
                f"| {added} | {ttfb} | {cpu} |"
            )


def figures(paths: list[str]) -> dict[tuple[str, str], dict[str, float | None]]:
    """Each Tallyhub figure of ``paths`` (the phases of one run) with its ratio to the aiohttp
    pass-through and its added p50 over it, each against the baseline of its own file."""
    rows: dict[tuple[str, str], dict[str, float | None]] = {}
    for path in paths:
        found = medians(path)
        for (target, scenario), m in found.items():
            if not target.startswith("tallyhub"):
                continue
            base = found.get((PASSTHRU, scenario), {})
            rows[(scenario, target)] = {
                **m,
                "ratio": m["rps"] / base["rps"] if m["rps"] and base.get("rps") else None,
                "added": m["p50"] - base["p50"] if m["p50"] is not None and base.get("p50") is not None else None,
            }
    return rows


def compare(
    old: dict[tuple[str, str], dict[str, float | None]], new: dict[tuple[str, str], dict[str, float | None]]
) -> None:

    def cell(m: dict[str, float | None] | None, key: str, form: str) -> str:
        value = None if m is None else m.get(key)
        return "-" if value is None else format(value, form)

    print(
        "\n| scenario | target | × pass-through before | after | RPS before | after | after ÷ before "
        "| +p50 ms vs pass-through before | after | gw CPU ms/req before | after |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for scenario, target in sorted(set(old) | set(new)):
        b, a = old.get((scenario, target)), new.get((scenario, target))
        gain = f"{a['rps'] / b['rps']:.2f}×" if a and b and a["rps"] and b["rps"] else "-"
        print(
            f"| {scenario} | {target} | {cell(b, 'ratio', '.2f')} | {cell(a, 'ratio', '.2f')} "
            f"| {cell(b, 'rps', ',.0f')} | {cell(a, 'rps', ',.0f')} | {gain} "
            f"| {cell(b, 'added', '+.2f')} | {cell(a, 'added', '+.2f')} "
            f"| {cell(b, 'cpu', '.2f')} | {cell(a, 'cpu', '.2f')} |"
        )


if __name__ == "__main__":
    if sys.argv[1] == "--before":
        split = sys.argv.index("--after")
        compare(figures(sys.argv[2:split]), figures(sys.argv[split + 1 :]))
    elif sys.argv[1] == "--ab":
        both = figures(sys.argv[2:])
        earlier = {(s, t.removesuffix("-before")): m for (s, t), m in both.items() if t.endswith("-before")}
        compare(earlier, {key: m for key, m in both.items() if not key[1].endswith("-before")})
    else:
        main(sys.argv[1])
