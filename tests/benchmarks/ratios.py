"""Every Tallyhub figure of one shared-harness run as a ratio to the baselines measured in
the same run: RPS ÷ the aiohttp pass-through's and ÷ LiteLLM's, added p50 over the direct
call, time to first byte, and gateway CPU per request.

    python3 tests/benchmarks/ratios.py $BENCH_WORK/results/run-….jsonl

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


if __name__ == "__main__":
    main(sys.argv[1])
