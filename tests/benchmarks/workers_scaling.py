"""What a second worker buys: ``tallyhub serve --workers 1`` against ``--workers 2`` at a 0 ms
upstream, in one run, alternated, in embedded mode (SQLite) and in server mode (PostgreSQL +
Redis, projections in a ``tallyhub worker``), with the shared harness's mock upstream and
closed-loop load generator (``BENCH_DIR``, default ``../shared/bench``).

Method: for each mode, one store; each repetition starts ``serve --workers 1``, runs every
scenario, stops it, then the same with ``--workers 2`` (the order flips every repetition, so a
drift of the machine's load does not favour one); nothing is pinned, so the gateway's
workers, the mock upstream, the load generator (and in server mode PostgreSQL, Redis and the
``tallyhub worker``) share the machine's cores as the kernel schedules them. For each run it
prints RPS, the gateway's CPU in cores (its processes' CPU seconds over the run's wall time)
and, with two workers, each worker's share of it: the load generator opens its C keep-alive
connections at once and the kernel gives each to whichever worker accepts first, so the split
is not even. The ratio 2 workers / 1 worker is taken within each repetition; the summary
gives its median and range.

    .venv/bin/python -m tests.benchmarks.workers_scaling                       # both modes, 3 repetitions
    .venv/bin/python -m tests.benchmarks.workers_scaling --modes sqlite --reps 5
    .venv/bin/python -m tests.benchmarks.workers_scaling --smoke               # tiny: what the smoke test runs

The harness's venv (``$BENCH_WORK/venv``) runs the mock and the load generator when it
exists, else this project's venv (it has what they import). Only 127.0.0.1 is used; every
load run is bounded (request count, per-request timeout, a cap on the run), and everything
started is stopped, the PostgreSQL schema dropped, at the end.
"""

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.gateway import free_port
from tests.support.serve_workers import wait_until_each_accepts, worker_pids

ROOT = Path(__file__).resolve().parents[2]
TALLYHUB = [sys.executable, "-m", "adapters.cli.main"]
PG_ADMIN = ["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-c"]
REDIS_URL = "redis://127.0.0.1:6379/0"
SCENARIOS = "ns-c32:32:3000: ns-c64:64:3000: st-c32:32:1500:--stream"
SMOKE_SCENARIOS = "ns-c4:4:20: st-c4:4:10:--stream"
START_LIMIT = 90  # seconds for a process to answer: a busy machine starts two workers slowly
RUN_LIMIT = 180  # seconds: loadgen's own cap on one run


def harness_dir() -> Path:
    for path in (Path(os.environ.get("BENCH_DIR", ROOT.parent / "shared" / "bench")), Path("/work/shared/bench")):
        if (path / "loadgen.py").is_file():
            return path
    raise SystemExit("the shared load harness is not found (set BENCH_DIR)")


def harness_python() -> str:
    work = Path(os.environ.get("BENCH_WORK", Path(tempfile.gettempdir()) / "tallyhub-bench"))
    venv = work / "venv" / "bin" / "python"
    return str(venv) if venv.is_file() else sys.executable


@dataclass(frozen=True)
class Scenario:
    name: str
    concurrency: int
    requests: int
    stream: bool

    @classmethod
    def parse(cls, text: str) -> "Scenario":
        name, concurrency, requests, extra = text.split(":", 3)
        return cls(name, int(concurrency), int(requests), extra == "--stream")


@dataclass(frozen=True)
class Result:
    mode: str
    scenario: str
    rep: int
    workers: int
    rps: float
    ok: int
    failed: dict[str, int]  # failed requests by kind (loadgen's names: http_500, ConnectionError, ...)
    requests: int
    cores: float  # the gateway's processes' CPU seconds over the run's wall time
    split: tuple[float, ...]  # each worker's share of the gateway's CPU (two workers)
    busy: float  # the machine's busy CPU over the run, in cores
    foreign: float  # of which no watched process (gateway, mock, loadgen, projector) used, in cores


def wait_answers(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_LIMIT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url} exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.1)  # polling a process that is starting: nothing to wait on but its port
    raise SystemExit(f"{url} did not answer within {START_LIMIT} s; see {log}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def started(args: list[str], env: dict[str, str], log: Path, url: str) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        process = subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_answers(url, process, log)
        yield process
    finally:
        stop(process)


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> dict[str, object]:
    done = subprocess.run(
        [*TALLYHUB, *args, "--json"], input=stdin, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )
    if done.returncode != 0:
        raise SystemExit(f"tallyhub {' '.join(args)} failed: {done.stdout} {done.stderr}")
    result: dict[str, object] = json.loads(done.stdout)
    return result


def set_up_store(env: dict[str, str], mock_port: int) -> str:
    """A store with the mock as provider and a funded account; returns its user key."""
    cli(env, "init")
    cli(
        env,
        "providers",
        "add",
        "mock",
        "--kind",
        "openai-compatible",
        "--base-url",
        f"http://127.0.0.1:{mock_port}/v1",
        "--api-key-stdin",
        stdin="sk-bench-upstream-0000\n",
    )
    cli(env, "prices", "set", "mock/mock-gpt", "--input", "1", "--output", "2")
    cli(env, "accounts", "create", "bench", "--starter-credits", "10000000")  # the largest one movement
    return str(cli(env, "keys", "issue", "bench")["key"])


@contextmanager
def store_env(mode: str, work: Path) -> Iterator[dict[str, str]]:
    """The environment of one mode's processes: its data dir and, in server mode, a PostgreSQL
    schema and a Redis key prefix of its own (the schema dropped afterwards)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYHUB_")}
    env |= {"TALLYHUB_BILLING_MODE": "credits", "TALLYHUB_DATA_DIR": str(work / mode), "PYTHONPATH": str(ROOT)}
    if mode == "sqlite":
        yield env
        return
    schema = f"th_wscale_{os.getpid()}_{secrets.token_hex(3)}"
    subprocess.run([*PG_ADMIN, f"CREATE SCHEMA {schema}"], check=True, timeout=60, capture_output=True)
    try:
        yield env | {
            "TALLYHUB_DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/test?schema={schema}",
            "TALLYHUB_REDIS_URL": REDIS_URL,
            "TALLYHUB_REDIS_PREFIX": f"th-wscale-{os.getpid()}",
        }
    finally:
        subprocess.run([*PG_ADMIN, f"DROP SCHEMA IF EXISTS {schema} CASCADE"], timeout=60, capture_output=True)


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, harness: Path, mock_pid: int, mock_port: int) -> None:
        self.args = args
        self.work = work
        self.harness = harness
        self.mock_pid = mock_pid
        self.mock_port = mock_port
        self.results: list[Result] = []
        self.projector_pid: int | None = None  # server mode's ``tallyhub worker``

    def run_mode(self, mode: str, stack: ExitStack) -> None:
        env = stack.enter_context(store_env(mode, self.work))
        key = set_up_store(env, self.mock_port)
        if mode == "server":
            port = free_port()  # the worker's /health, so that its start can be waited for
            projector = stack.enter_context(
                started(
                    [*TALLYHUB, "worker", "--health-port", str(port)],
                    env,
                    self.work / "worker.log",
                    f"http://127.0.0.1:{port}/health",
                )
            )
            self.projector_pid = projector.pid
        for rep in range(1, self.args.reps + 1):
            for workers in (1, 2) if rep % 2 else (2, 1):
                self.run_serve(mode, env, key, rep, workers)

    def run_serve(self, mode: str, env: dict[str, str], key: str, rep: int, workers: int) -> None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        args = [*TALLYHUB, "serve", "--port", str(port), "--workers", str(workers)]
        with started(args, env, self.work / f"serve-{mode}-w{workers}.log", f"{url}/health") as serve:
            pids = worker_pids(serve.pid) if workers > 1 else {serve.pid}
            deadline = time.monotonic() + START_LIMIT
            while len(pids) < workers:
                if time.monotonic() > deadline:
                    raise SystemExit(f"serve --workers {workers} did not spawn its workers")
                time.sleep(0.1)  # spawning: nothing to wait on but /proc
                pids = worker_pids(serve.pid)
            if workers > 1:
                wait_until_each_accepts(port, pids, START_LIMIT)
            for scenario in map(Scenario.parse, self.args.scenarios.split()):
                result = self.load(mode, scenario, rep, workers, url, key, serve.pid, sorted(pids))
                self.results.append(result)
                print(line_of(result), flush=True)

    def load(
        self, mode: str, scenario: Scenario, rep: int, workers: int, url: str, key: str, serve_pid: int, pids: list[int]
    ) -> Result:
        out = self.work / "loadgen.jsonl"
        watched = [f"gw={serve_pid}"] + ([f"w{i}={pid}" for i, pid in enumerate(pids)] if workers > 1 else [])
        args = [harness_python(), str(self.harness / "loadgen.py"), "--url", f"{url}/v1/chat/completions"]
        args += ["-n", str(scenario.requests), "-c", str(scenario.concurrency), "--warmup", str(self.args.warmup)]
        args += ["--model", "mock/mock-gpt", "--timeout", "30", "--max-seconds", str(RUN_LIMIT), "--quiet"]
        args += ["-H", f"Authorization: Bearer {key}", "--out", str(out), "--watch", f"mock={self.mock_pid}"]
        args += [arg for name in watched for arg in ("--watch", name)]
        if mode == "server":  # its CPU is the system's, not foreign, but not the gateway's either
            args += ["--watch", f"projector={self.projector_pid}"]
        label = f"{mode}|{scenario.name}|{rep}|w{workers}"
        args += ["--label", label] + (["--stream"] if scenario.stream else [])
        done = subprocess.run(args, capture_output=True, text=True, timeout=RUN_LIMIT + 60)
        lines = out.read_text().splitlines() if out.exists() else []
        run = json.loads(lines[-1]) if lines else {}
        # exit 1: some requests failed; the run still counts (its failures are printed and make
        # the benchmark's own exit status 1), anything else stops the benchmark
        if done.returncode not in (0, 1) or run.get("label") != label:
            raise SystemExit(f"loadgen failed ({done.returncode}): {done.stdout} {done.stderr}")
        procs = run["cpu"]["procs_s"]
        gateway = sum(procs[name.split("=")[0]] or 0 for name in watched)
        workers_cpu = [procs[f"w{i}"] or 0 for i in range(len(pids))] if workers > 1 else []
        return Result(
            mode=mode,
            scenario=scenario.name,
            rep=rep,
            workers=workers,
            rps=run["rps"] or 0.0,
            ok=run["ok"],
            failed=run["error_kinds"],
            requests=scenario.requests,
            cores=gateway / run["wall_s"],
            split=tuple(cpu / sum(workers_cpu) if sum(workers_cpu) else 0.0 for cpu in workers_cpu),
            busy=run["cpu"]["busy_s"] / run["wall_s"],
            foreign=run["cpu"]["foreign_s"] / run["wall_s"],
        )


def line_of(result: Result) -> str:
    failed = f" failed {json.dumps(result.failed)}" if result.failed else ""
    split = f" split {'/'.join(f'{share:.2f}' for share in result.split)}" if result.split else ""
    return (
        f"{result.mode} {result.scenario} rep {result.rep} workers {result.workers}: rps {result.rps:,.1f} "
        f"ok {result.ok}/{result.requests}{failed} gateway {result.cores:.2f} cores{split} "
        f"machine {result.busy:.2f} cores busy, {result.foreign:.2f} foreign"
    )


def summary(results: list[Result]) -> list[str]:
    """One row per mode and scenario: medians (and ranges) of RPS and gateway cores, and of the
    ratio 2 workers / 1 worker within each repetition."""
    rows = [
        f"{os.cpu_count()} CPUs, nothing pinned; medians (min–max) over {max(r.rep for r in results)} repetition(s)",
        "| mode | scenario | 1 worker RPS | 2 workers RPS | ratio 2/1 | gateway cores 1 / 2"
        " | gateway CPU ms/request 1 / 2 | busier worker's CPU share | foreign cores | failed 1 / 2 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = list(dict.fromkeys((r.mode, r.scenario) for r in results))
    for mode, scenario in keys:
        runs = [r for r in results if (r.mode, r.scenario) == (mode, scenario)]
        one = {r.rep: r for r in runs if r.workers == 1}
        two = {r.rep: r for r in runs if r.workers == 2}
        ratios = [two[rep].rps / one[rep].rps for rep in sorted(one.keys() & two.keys()) if one[rep].rps]
        cores = " / ".join(median([r.cores for r in each.values()], "{:.2f}") for each in (one, two))
        cpu = " / ".join(median([cpu_ms(r) for r in each.values()], "{:.2f}") for each in (one, two))
        rows.append(
            f"| {mode} | {scenario} | {spread([r.rps for r in one.values()], '{:,.0f}')} "
            f"| {spread([r.rps for r in two.values()], '{:,.0f}')} | {spread(ratios, '{:.2f}×')} | {cores} | {cpu} "
            f"| {spread([max(r.split) for r in two.values() if r.split], '{:.2f}')} "
            f"| {spread([r.foreign for r in runs], '{:.2f}')} "
            f"| {' / '.join(str(sum(sum(r.failed.values()) for r in each.values())) for each in (one, two))} |"
        )
    return rows


def cpu_ms(result: Result) -> float:
    """The gateway's CPU milliseconds per request: what a second worker costs or saves, whatever
    share of the machine the run got."""
    return result.cores * 1000 / result.rps if result.rps else 0.0


def median(values: list[float], form: str) -> str:
    return form.format(statistics.median(values)) if values else "-"


def spread(values: list[float], form: str) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return form.format(values[0])
    return f"{form.format(statistics.median(values))} ({form.format(min(values))}–{form.format(max(values))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="sqlite,server", help="sqlite, server or both (comma-separated)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--scenarios", default=SCENARIOS, help="name:concurrency:requests:[--stream] ...")
    parser.add_argument("--warmup", type=int, default=200, help="uncounted requests before each run")
    parser.add_argument("--smoke", action="store_true", help="one tiny repetition (the smoke test's run)")
    args = parser.parse_args()
    if args.smoke:
        args.reps, args.scenarios, args.warmup = 1, SMOKE_SCENARIOS, 4
    modes = [mode for mode in args.modes.split(",") if mode]
    if not modes or set(modes) - {"sqlite", "server"} or args.reps < 1:
        parser.error("--modes takes sqlite and/or server, --reps at least 1")
    harness = harness_dir()
    work = Path(tempfile.mkdtemp(prefix="tallyhub-workers-scaling-"))
    try:
        mock_port = free_port()
        mock_env = os.environ | {"MOCK_PORT": str(mock_port)}
        with ExitStack() as stack:
            mock = stack.enter_context(
                started(
                    [harness_python(), str(harness / "mock_upstream.py")],
                    mock_env,
                    work / "mock.log",
                    f"http://127.0.0.1:{mock_port}/health",
                )
            )
            bench = Bench(args, work, harness, mock.pid, mock_port)
            for mode in modes:
                with ExitStack() as mode_stack:
                    bench.run_mode(mode, mode_stack)
        print("\n".join(summary(bench.results)))
        failed = [line_of(result) for result in bench.results if result.failed]
        if failed:
            sys.exit("runs with failed requests (see the serve logs):\n" + "\n".join(failed))
    except BaseException:
        print(f"failed: the logs are kept in {work}", file=sys.stderr)
        raise
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
