"""Every benchmark in tests/benchmarks runs once, tiny, the way `make bench` runs it (a
subprocess), so that a refactor can no longer break one unnoticed (issue 21).

Each run must exit 0 and print its figures: the tests parse what it prints and fail on a
missing, unparsable or non-finite figure (a NaN does not match), on a failed request and on a
missing table row. No figure is compared with a bound: these runs are too small to measure.

The two shell benchmarks spend most of their time waiting (server start-up, valgrind's
start-up), so the module starts the selected ones in the background at its first test, and
the Python benchmarks run meanwhile. Both shell scripts run with ``BENCH_SMOKE=1``: the
shared harness (``BENCH_DIR``, default ``../shared/bench``) with this project's venv, on
free ports, in directories of their own; only 127.0.0.1 is used.
"""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

ROOT = Path(__file__).resolve().parents[2]
# BENCH_DIR, else the harness beside this checkout, else where the project's machines keep it
# (a clean clone elsewhere, as CI makes, still finds it); the scripts are told which (bench_env)
HARNESS = next(
    (
        path
        for path in (Path(os.environ.get("BENCH_DIR", ROOT.parent / "shared" / "bench")), Path("/work/shared/bench"))
        if path.is_dir()
    ),
    Path(os.environ.get("BENCH_DIR", ROOT.parent / "shared" / "bench")),
)
PYTHON_RUN_LIMIT = 300  # seconds: a bound on a hung run, not a timing assertion
SHELL_RUN_LIMIT = 900

SCENARIOS = "ns-c1:1:10: st-c2:2:10:--stream"
LAT50_SCENARIOS = "lat50-ns-c2:2:4:"
SCENARIO_NAMES = ("ns-c1", "st-c2", "lat50-ns-c2")
# the smoke run also measures BEFORE_TREE (this same checkout here): its plumbing is what is tested
EMBEDDED_TARGETS = ("direct", "passthru-aiohttp", "tallyhub-sqlite", "tallyhub-sqlite-before")
SERVER_TARGETS = ("direct", "passthru-aiohttp", "tallyhub-pg", "tallyhub-pg-w2", "tallyhub-pg-before")


def bench_env(**extra: str) -> dict[str, str]:
    """This process's environment without Tallyhub's settings (each benchmark sets its own)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("TALLYHUB_")}
    return env | {"BENCH_DIR": str(HARNESS)} | extra


@dataclass
class Background:
    """A shell benchmark started in a process group of its own, its output in a file."""

    process: subprocess.Popen[bytes]
    output: IO[bytes]

    def finish(self) -> str:
        try:
            code = self.process.wait(timeout=SHELL_RUN_LIMIT)
        finally:
            self.stop()
        self.output.seek(0)
        text = self.output.read().decode(errors="replace")
        assert code == 0, f"exit {code}:\n{text[-4000:]}"
        return text

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=60)


def start(args: list[str], env: dict[str, str]) -> Background:
    output = tempfile.TemporaryFile()
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    return Background(process, output)


def instructions_runnable() -> bool:
    return shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None


@pytest.fixture(scope="module", autouse=True)
def shell_runs(request: pytest.FixtureRequest) -> Iterator[dict[str, Background]]:
    """The shell benchmarks this session selected, started at once in the background."""
    selected = {getattr(item, "originalname", item.name) for item in request.session.items}
    runs: dict[str, Background] = {}
    if HARNESS.is_dir() and "test_shared_bench_smoke_run_prints_every_tallyhub_ratio" in selected:
        runs["shared_bench"] = start(
            ["bash", "tests/benchmarks/shared_bench.sh"],
            bench_env(BENCH_SMOKE="1", SCENARIOS=SCENARIOS, LAT50_SCENARIOS=LAT50_SCENARIOS, BEFORE_TREE=str(ROOT)),
        )
    if HARNESS.is_dir() and instructions_runnable() and "test_instructions_per_request_counts_both_keys" in selected:
        runs["instructions"] = start(
            ["bash", "tests/benchmarks/instructions_per_request.sh", "10", "1"], bench_env(BENCH_SMOKE="1")
        )
    yield runs
    for run in runs.values():
        run.stop()
        run.output.close()


def run_module(module: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", f"tests.benchmarks.{module}", *args],
        cwd=ROOT,
        env=bench_env(),
        capture_output=True,
        text=True,
        timeout=PYTHON_RUN_LIMIT,
    )
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stdout}\n{done.stderr[-4000:]}"
    return done.stdout


def number(text: str) -> float:
    value = float(text.replace(",", ""))
    assert math.isfinite(value), text
    return value


AUDIT_STEPS = (
    "write the history (3 events per charge)",
    "replay preview, every rate doubled",
    "catch up the ledger-entries read model",
    "catch up the other read models",
    "export ledger (CSV, with hash chain)",
    "verify (fold, compare, re-price every record)",
)


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_audit_scale_replays_exports_and_verifies_a_small_history(store: str) -> None:
    out = run_module("audit_scale", "--store", store, "--charges", "300")
    assert out.splitlines()[0] == f"300 charges on {store}"
    steps = dict(re.findall(r"^(\S.*?)\s+(\S+) s$", out, re.MULTILINE))
    assert sorted(steps) == sorted(AUDIT_STEPS), out
    assert all(number(seconds) >= 0 for seconds in steps.values()), out
    replay = re.search(r"^\s+([\d,]+) charges/s; difference ([\d,]+) nanocredits$", out, re.MULTILINE)
    assert replay is not None, out
    assert number(replay[1]) > 0 and int(replay[2].replace(",", "")) > 0
    export = re.search(r"^\s+([\d,]+) rows/s; ([\d,]+) MB$", out, re.MULTILINE)
    assert export is not None and number(export[1]) > 0, out


@pytest.mark.parametrize("driver", ["threads", "loop"])
@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_ledger_throughput_bills_a_hot_account_without_overdraft(store: str, driver: str) -> None:
    out = run_module("ledger_throughput", "--store", store, "--clients", "4", "--seconds", "1", "--driver", driver)
    found = re.fullmatch(
        rf"{store}: (\d+) billed requests in ([\d.]+) s = ([\d,]+)/s with 4 clients \({driver}\) on one hot account; "
        r"(\d+) refused; overdraft 0; ([\d.]+) account changes per transaction; "
        r"(\d+) us of this process's CPU per billed request\n",
        out,
    )
    assert found is not None, out
    assert int(found[1]) > 0 and number(found[2]) > 0 and number(found[3]) > 0
    assert number(found[5]) >= 1 and int(found[6]) > 0


@pytest.mark.redis
def test_limiter_redis_prints_every_limiter_figure() -> None:
    out = run_module("limiter_redis", "-n", "200", "-c", "4")
    lines = out.splitlines()
    assert lines[0].split() == ["n=200", "c=4", "wall", "us/call", "client", "CPU", "us/call"]
    rows = {}
    for line in lines[1:]:
        found = re.fullmatch(r"(.+?)\s+([\d.]+)\s+([\d.]+)", line)
        assert found is not None, line
        rows[found[1]] = (number(found[2]), number(found[3]))
    assert sorted(rows) == sorted(
        [
            "PING (redis-py asyncio)",
            "PING (adapters/redis_pipe)",
            "Redis admit+settle (2 EVALSHA)",
            "Redis admit+settle, RPM only",
            "in-process admit+settle",
        ]
    )
    assert all(wall > 0 for wall, _ in rows.values()), out


@pytest.mark.postgres
@pytest.mark.redis
def test_projection_lag_times_each_request_until_both_read_models_show_it() -> None:
    out = run_module("projection_lag", "--rate", "20", "--seconds", "1")
    sent = re.search(
        r"^requests: 20 sent, 20 answered 200, 0 failed; target 20/s, achieved ([\d,]+)/s over ([\d.]+) s$",
        out,
        re.MULTILINE,
    )
    assert sent is not None and number(sent[1]) > 0 and number(sent[2]) > 0, out
    for name in ("request log", "balances"):
        lag = re.search(
            rf"^{name} lag: p50 ([\d,]+) ms, p99 ([\d,]+) ms, max ([\d,]+) ms \(20 requests\)$", out, re.MULTILINE
        )
        assert lag is not None, out
        assert 0 <= number(lag[1]) <= number(lag[2]) <= number(lag[3]), out


def loadgen_line(target: str, scenario: str, rep: int, rps: float, p50: float, **extra: object) -> str:
    """One result line as the harness's loadgen.py writes it (the fields ratios.py reads)."""
    return json.dumps({"label": f"{target}|{scenario}|{rep}", "rps": rps, "lat_ms": {"p50": p50}, **extra})


def ratio_table_rows(*args: str) -> list[str]:
    """The scenario rows ``ratios.py ARGS`` prints (it must exit 0)."""
    done = subprocess.run(
        [sys.executable, "tests/benchmarks/ratios.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=PYTHON_RUN_LIMIT,
    )
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line.startswith("| ns-") or line.startswith("| st-")]


def test_ratios_table_uses_medians_of_clean_runs_against_the_same_runs_baselines(tmp_path: Path) -> None:
    results = tmp_path / "run.jsonl"
    lines = [
        loadgen_line("direct", "ns-c1", 1, 2000, 0.5),
        loadgen_line("passthru-aiohttp", "ns-c1", 1, 900, 1.0),
        loadgen_line("passthru-aiohttp", "ns-c1", 2, 1100, 1.0),
        loadgen_line("litellm", "ns-c1", 1, 100, 9.0),
        loadgen_line("tallyhub-sqlite", "ns-c1", 1, 400, 2.0, cpu_ms_per_req={"gw": 1.5}),
        loadgen_line("tallyhub-sqlite", "ns-c1", 2, 500, 3.0, cpu_ms_per_req={"gw": 2.5}),
        loadgen_line("tallyhub-sqlite", "ns-c1", 3, 10, 90.0, contaminated=True, cpu_ms_per_req={"gw": 50}),
        loadgen_line("passthru-aiohttp", "st-c2", 1, 800, 1.5, ttfb_ms={"p50": 1.2}),
        loadgen_line("tallyhub-sqlite", "st-c2", 1, 200, 4.0, ttfb_ms={"p50": 2.25}),
    ]
    results.write_text("\n".join(lines) + "\n")
    assert ratio_table_rows(str(results)) == [
        "| ns-c1 | tallyhub-sqlite | 450 | 0.45× | 4.50× | +2.00 | - | 2.00 |",
        "| st-c2 | tallyhub-sqlite | 200 | 0.25× | - | - | 2.25 | - |",
    ]


def test_ratios_compare_puts_two_builds_side_by_side_each_against_its_own_runs_baseline(tmp_path: Path) -> None:
    before, after = tmp_path / "before.jsonl", tmp_path / "after.jsonl"
    before.write_text(
        "\n".join(
            [
                loadgen_line("passthru-aiohttp", "ns-c1", 1, 1000, 1.0),
                loadgen_line("tallyhub-sqlite", "ns-c1", 1, 250, 3.0, cpu_ms_per_req={"gw": 2.0}),
                loadgen_line("tallyhub-pg", "ns-c32", 1, 100, 9.0),
            ]
        )
    )
    after.write_text(
        "\n".join(
            [
                loadgen_line("passthru-aiohttp", "ns-c1", 1, 800, 0.5),  # a slower machine: its own baseline
                loadgen_line("tallyhub-sqlite", "ns-c1", 1, 400, 1.25, cpu_ms_per_req={"gw": 1.5}),
                loadgen_line("tallyhub-sqlite", "ns-c1", 2, 0, 99.0, contaminated=True),
            ]
        )
    )
    assert ratio_table_rows("--before", str(before), "--after", str(after)) == [
        "| ns-c1 | tallyhub-sqlite | 0.25 | 0.50 | 250 | 400 | 1.60× | +2.00 | +0.75 | 2.00 | 1.50 |",
        "| ns-c32 | tallyhub-pg | - | - | 100 | - | - | - | - | - | - |",
    ]


def test_ratios_ab_pairs_each_target_with_its_before_build_of_the_same_run(tmp_path: Path) -> None:
    results = tmp_path / "run.jsonl"
    results.write_text(
        "\n".join(
            [
                loadgen_line("passthru-aiohttp", "ns-c1", 1, 1000, 1.0),
                loadgen_line("tallyhub-sqlite-before", "ns-c1", 1, 200, 3.0),
                loadgen_line("tallyhub-sqlite", "ns-c1", 1, 300, 2.0),
            ]
        )
    )
    assert ratio_table_rows("--ab", str(results)) == [
        "| ns-c1 | tallyhub-sqlite | 0.20 | 0.30 | 200 | 300 | 1.50× | +2.00 | +1.00 | - | - |"
    ]


def loadgen_runs(out: str) -> dict[tuple[str, str], re.Match[str]]:
    """The last loadgen line of each (target, scenario) that bench.sh printed."""
    runs = {}
    for found in re.finditer(
        r"^\[rep 1 try \d+ rc (\d+)\] ([\w-]+)\|([\w-]+)\|1: c=\d+ n=(\d+) ok=(\d+) err=(\d+) rps=(\S+)",
        out,
        re.MULTILINE,
    ):
        runs[(found[2], found[3])] = found
    return runs


def ratio_rows(out: str) -> dict[tuple[str, str], list[str]]:
    """The rows of ratios.py's tables: (scenario, target) -> the cells after the target."""
    rows = {}
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 8 and cells[1].startswith("tallyhub"):
            rows[(cells[0], cells[1])] = cells[2:]
    return rows


@pytest.mark.postgres
@pytest.mark.redis
def test_shared_bench_smoke_run_prints_every_tallyhub_ratio(shell_runs: dict[str, Background]) -> None:
    if not HARNESS.is_dir():
        pytest.skip(f"the shared load harness is not at {HARNESS} (set BENCH_DIR)")
    out = shell_runs["shared_bench"].finish()
    runs = loadgen_runs(out)
    expected = [(t, s) for s in SCENARIO_NAMES for t in EMBEDDED_TARGETS] + [
        (t, s) for s in SCENARIO_NAMES for t in SERVER_TARGETS
    ]
    assert sorted(set(expected)) == sorted(runs), out[-4000:]
    for (target, scenario), run in runs.items():
        rc, n, ok, errors, rps = run[1], run[4], run[5], run[6], run[7]
        assert (rc, ok, errors) == ("0", n, "0"), f"{target} {scenario}: {run[0]}"
        assert number(rps) > 0, run[0]
    rows = ratio_rows(out)
    tallyhub = [(s, t) for t, s in expected if t.startswith("tallyhub")]
    assert sorted(rows) == sorted(tallyhub), out[-4000:]
    for (scenario, target), (rps, passthrough, litellm, added_p50, ttfb, cpu) in rows.items():
        assert number(rps) > 0 and passthrough.endswith("×") and number(passthrough[:-1]) > 0, (scenario, target)
        assert litellm == "-"  # no LiteLLM in a smoke run
        number(added_p50)
        number(cpu)
        if scenario.startswith("st-"):
            assert number(ttfb) > 0, (scenario, target)


def test_instructions_per_request_counts_both_keys(shell_runs: dict[str, Background]) -> None:
    if not HARNESS.is_dir():
        pytest.skip(f"the shared load harness is not at {HARNESS} (set BENCH_DIR)")
    if not instructions_runnable():
        pytest.skip("valgrind (callgrind) is not installed")
    out = shell_runs["instructions"].finish()
    counts = dict(re.findall(r"^1\s+(plain|limited)\s+(\d+)$", out, re.MULTILINE))
    assert sorted(counts) == ["limited", "plain"], out[-4000:]
    assert all(int(count) > 0 for count in counts.values())


@pytest.mark.parametrize("mode", ["sqlite", pytest.param("server", marks=[pytest.mark.postgres, pytest.mark.redis])])
def test_workers_scaling_prints_one_and_two_workers_and_their_ratio(mode: str) -> None:
    if not HARNESS.is_dir():
        pytest.skip(f"the shared load harness is not at {HARNESS} (set BENCH_DIR)")
    out = run_module("workers_scaling", "--smoke", "--modes", mode)
    runs = re.findall(
        rf"^{mode} (\S+) rep 1 workers ([12]): rps ([\d,.]+) ok (\d+)/(\d+) gateway ([\d.]+) cores"
        r"(?: split ([\d.]+)/([\d.]+))? machine ([\d.]+) cores busy, (-?[\d.]+) foreign$",
        out,
        re.MULTILINE,
    )
    assert sorted((run[0], run[1]) for run in runs) == [("ns-c4", "1"), ("ns-c4", "2"), ("st-c4", "1"), ("st-c4", "2")]
    for scenario, workers, rps, ok, sent, cores, *split, busy, _ in runs:
        # a tiny run's CPU figures may round to 0.00 (a run of a few milliseconds): printed, not judged
        assert ok == sent and number(rps) > 0 and number(cores) >= 0 and number(busy) >= 0, (scenario, workers)
        shares = [number(share) for share in split if share]
        assert len(shares) == (2 if workers == "2" else 0), (scenario, workers)
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| ")]
    assert [row[:2] for row in rows[1:]] == [[mode, "ns-c4"], [mode, "st-c4"]], out
    for row in rows[1:]:
        assert len(row) == 10 and row[4].endswith("×") and number(row[4][:-1]) > 0, row
