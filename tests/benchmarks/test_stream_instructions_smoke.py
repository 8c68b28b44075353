"""``tests/benchmarks/instructions_per_stream.sh`` runs once, tiny, the way it is run for
docs/performance.md (a subprocess, ``BENCH_SMOKE=1``: the shared harness with this project's
venv, free ports, 127.0.0.1 only), so a refactor cannot break it unnoticed (issue 21).

It must exit 0 and print every row of its table as an integer; the three counted batches must
be positive. No figure is compared with a bound: a run this small measures nothing (its
per-chunk difference may even come out negative)."""

import re
import shutil
import subprocess

import pytest

from tests.benchmarks.test_benchmarks_smoke import HARNESS, ROOT, bench_env

RUN_LIMIT = 900  # seconds: a bound on a hung run, not a timing assertion
ROWS = ("stream 6 chunks", "stream 10 chunks", "plain", "per chunk", "stream, per request")


def test_instructions_per_stream_counts_every_row() -> None:
    if not HARNESS.is_dir():
        pytest.skip(f"the shared load harness is not at {HARNESS} (set BENCH_DIR)")
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        pytest.skip("valgrind (callgrind) is not installed")
    done = subprocess.run(
        ["bash", "tests/benchmarks/instructions_per_stream.sh", "4", "1"],
        cwd=ROOT,
        env=bench_env(BENCH_SMOKE="1", SHORT="4", LONG="8"),
        capture_output=True,
        text=True,
        timeout=RUN_LIMIT,
    )
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stdout}\n{done.stderr[-4000:]}"
    rows = dict(re.findall(r"^1\s+(\S.*?)\s+(-?\d+)$", done.stdout, re.MULTILINE))
    assert sorted(rows) == sorted(ROWS), done.stdout
    assert all(int(rows[row]) > 0 for row in ROWS[:3]), done.stdout
