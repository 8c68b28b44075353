"""Projection lag in server mode (issue 21: p99 ≤ 1 s at 1,000 requests/s): how long after a
request is answered the read models show it.

One ``tallyhub serve`` and one ``tallyhub worker`` on PostgreSQL (a schema of the run's own,
dropped at the end) and Redis (a key prefix of its own), in front of the shared harness's
mock upstream (``BENCH_DIR``, else ../shared/bench; without it the test suite's fake
upstream, in this process). Plain chat requests are sent at a fixed rate (open loop, at
most ``--connections`` in flight: a gateway that cannot keep up lowers the rate achieved,
which is printed). Meanwhile a thread reads the request-log and balances projections'
positions every ``--poll-ms``; afterwards each request's events are looked up in the event
log (its ``RequestRecord`` and the ``HoldSettled`` that names it), and its lag is the time
from its answer to the first position read that had passed that event. So each figure is
an upper bound, by at most one poll interval and one read. Warm-up requests are left out.

    .venv/bin/python -m tests.benchmarks.projection_lag --rate 1000 --seconds 10

Only 127.0.0.1 is used; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg

from tests.support.gateway import REPO, TALLYHUB, cli, free_port

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
REDIS_URL = "redis://127.0.0.1:6379/0"
MODEL = "mock/mock-gpt"
UPSTREAM_KEY = "sk-bench-upstream-0000"
BODY = orjson.dumps({"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "hello"}]})
WARMUP = 50
START_LIMIT = 60.0  # seconds for a process to start listening
CATCH_UP_LIMIT = 120.0  # seconds for the read models to show the last request


@dataclass
class Answer:
    request_id: str  # hex, no dashes
    answered: float  # time.monotonic() once the body was read
    status: int


@dataclass
class Samples:
    """Positions of the two projections as read, with the time each read returned."""

    times: list[float] = field(default_factory=list)
    request_log: list[int] = field(default_factory=list)
    balances: list[int] = field(default_factory=list)


def harness_dir() -> Path | None:
    for path in (Path(os.environ.get("BENCH_DIR", REPO.parent / "shared" / "bench")), Path("/work/shared/bench")):
        if (path / "mock_upstream.py").is_file():
            return path
    return None


@contextmanager
def schema() -> Iterator[str]:
    name = f"th_bench_lag_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)


@contextmanager
def upstream(started: list[subprocess.Popen[bytes]], logs: Path) -> Iterator[str]:
    """The mock upstream's base URL: the shared harness's, or the suite's fake in this process."""
    harness = harness_dir()
    if harness is None:
        from tests.fakes.openai_upstream import FakeOpenAIUpstream

        fake = FakeOpenAIUpstream(api_key=UPSTREAM_KEY).start()
        try:
            yield fake.base_url
        finally:
            fake.stop()
        return
    port = free_port()
    with open(logs / "mock.log", "wb") as log:
        started.append(
            subprocess.Popen(
                [sys.executable, str(harness / "mock_upstream.py")],
                env=os.environ | {"MOCK_PORT": str(port)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    wait_listening(f"http://127.0.0.1:{port}/health", started[-1], logs / "mock.log")
    yield f"http://127.0.0.1:{port}/v1"


def wait_listening(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    import httpx

    deadline = time.monotonic() + START_LIMIT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the process exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {START_LIMIT} s:\n{log.read_text()[-3000:]}")


def gateway(data_dir: Path, schema_name: str, upstream_url: str) -> tuple[dict[str, str], str]:
    """A server-mode gateway's environment, set up through the CLI; its API key."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("TALLYHUB_")}
    env.update(
        PYTHONPATH=str(REPO),
        TALLYHUB_DATA_DIR=str(data_dir),
        TALLYHUB_BILLING_MODE="credits",
        TALLYHUB_DATABASE_URL=f"postgresql://postgres@127.0.0.1:5432/test?schema={schema_name}",
        TALLYHUB_REDIS_URL=REDIS_URL,
        TALLYHUB_REDIS_PREFIX=f"th-bench-lag-{secrets.token_hex(4)}",
    )
    cli(env, "init")
    provider = ["providers", "add", "mock", "--kind", "openai-compatible", "--base-url", upstream_url]
    cli(env, *provider, "--api-key-stdin", stdin=UPSTREAM_KEY + "\n")
    cli(env, "prices", "set", MODEL, "--input", "1", "--output", "2")
    cli(env, "accounts", "create", "bench", "--starter-credits", "10000000")
    return env, str(cli(env, "keys", "issue", "bench")["key"])


def sample(conninfo: str, every: float, samples: Samples, stop: threading.Event) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while not stop.is_set():
            rows: dict[str, int] = dict(
                conn.execute(
                    "SELECT name, position FROM th_rm_tracking WHERE name IN ('request_log', 'balances')"
                ).fetchall()
            )
            samples.times.append(time.monotonic())
            samples.request_log.append(int(rows.get("request_log", 0)))
            samples.balances.append(int(rows.get("balances", 0)))
            stop.wait(every)


async def load(url: str, key: str, rate: float, count: int, connections: int) -> tuple[list[Answer], float]:
    """``count`` requests, the i-th sent at ``i / rate`` s (or as soon as one of ``connections``
    is free); the answers and the seconds from the first send to the last answer."""
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    answers: list[Answer] = []
    slots = asyncio.Semaphore(connections)
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> None:
            try:
                async with session.post(url, data=BODY, headers=headers) as response:
                    await response.read()
                    request_id = response.headers.get("x-request-id", "").replace("-", "").lower()
                    answers.append(Answer(request_id, time.monotonic(), response.status))
            except (aiohttp.ClientError, TimeoutError) as error:
                answers.append(Answer("", time.monotonic(), 0))
                print(f"request failed: {type(error).__name__}: {error}", file=sys.stderr)
            finally:
                slots.release()

        started = time.monotonic()
        tasks = []
        for i in range(count):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return answers, time.monotonic() - started


def event_ids(conninfo: str, after: int) -> tuple[dict[str, int], dict[str, int]]:
    """Request id (hex) -> the notification id of its record, and of the settlement naming it."""
    records: dict[str, int] = {}
    settlements: dict[str, int] = {}
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT notification_id, originator_id, topic, state FROM ledger_events WHERE notification_id > %s"
            " AND (topic LIKE %s OR topic LIKE %s)",
            (after, "%RequestRecord.Completed", "%Account.HoldSettled"),
        ).fetchall()
    for notification_id, originator_id, topic, state in rows:
        if topic.endswith("RequestRecord.Completed"):
            records[str(originator_id).replace("-", "")] = int(notification_id)
        else:
            settlements[uuid_hex(orjson.loads(bytes(state))["request_id"])] = int(notification_id)
    return records, settlements


def uuid_hex(value: Any) -> str:
    text = value.get("_data_", "") if isinstance(value, dict) else value
    return str(text).replace("-", "").lower()


def lags(answers: list[Answer], ids: dict[str, int], times: list[float], positions: list[int]) -> list[float]:
    """Per answered request: seconds from its answer to the first read that had passed its event."""
    found = []
    for answer in answers:
        event = ids.get(answer.request_id)
        if event is None:
            raise SystemExit(f"request {answer.request_id}: no event found for it in the event log")
        shown = max(bisect.bisect_left(positions, event), bisect.bisect_left(times, answer.answered))
        if shown >= len(times):
            raise SystemExit(f"request {answer.request_id}: the read model never showed it")
        found.append(times[shown] - answer.answered)
    return found


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def head(conninfo: str) -> int:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT COALESCE(MAX(notification_id), 0) FROM ledger_events").fetchone()
    return int(row[0]) if row else 0


def run(args: argparse.Namespace, data_dir: Path, schema_name: str, started: list[subprocess.Popen[bytes]]) -> None:
    conninfo = f"{PG_ADMIN} options='-c search_path={schema_name}'"
    with upstream(started, data_dir) as upstream_url:
        env, key = gateway(data_dir / "gateway", schema_name, upstream_url)
        with open(data_dir / "worker.log", "wb") as log:
            started.append(subprocess.Popen([*TALLYHUB, "worker"], env=env, cwd=REPO, stdout=log, stderr=log))
        port = free_port()
        serve = [*TALLYHUB, "serve", "--port", str(port), "--workers", str(args.serve_workers)]
        with open(data_dir / "serve.log", "wb") as log:
            started.append(subprocess.Popen(serve, env=env, cwd=REPO, stdout=log, stderr=log))
        wait_listening(f"http://127.0.0.1:{port}/health", started[-1], data_dir / "serve.log")
        url = f"http://127.0.0.1:{port}/v1/chat/completions"

        warm, _ = asyncio.run(load(url, key, args.rate, WARMUP, args.connections))
        assert all(a.status == 200 for a in warm), [a.status for a in warm]
        before = head(conninfo)
        samples, stop = Samples(), threading.Event()
        sampler = threading.Thread(target=sample, args=(conninfo, args.poll_ms / 1000, samples, stop), daemon=True)
        sampler.start()
        try:
            count = round(args.rate * args.seconds)
            answers, elapsed = asyncio.run(load(url, key, args.rate, count, args.connections))
            last = head(conninfo)
            deadline = time.monotonic() + CATCH_UP_LIMIT
            while not (samples.times and min(samples.request_log[-1], samples.balances[-1]) >= last):
                if time.monotonic() > deadline:
                    raise SystemExit(f"the read models did not reach {last} within {CATCH_UP_LIMIT} s")
                time.sleep(0.05)
        finally:
            stop.set()
            sampler.join(10)
    report(args, answers, elapsed, event_ids(conninfo, before), samples)


def report(
    args: argparse.Namespace,
    answers: list[Answer],
    elapsed: float,
    ids: tuple[dict[str, int], dict[str, int]],
    samples: Samples,
) -> None:
    ok = [a for a in answers if a.status == 200]
    print(
        f"server mode: 1 serve ({args.serve_workers} worker(s)), 1 tallyhub worker, PostgreSQL + Redis; "
        f"plain chat, mock upstream"
    )
    print(
        f"requests: {len(answers)} sent, {len(ok)} answered 200, {len(answers) - len(ok)} failed; "
        f"target {args.rate:,.0f}/s, achieved {len(answers) / elapsed:,.0f}/s over {elapsed:.1f} s"
    )
    print(f"position reads: {len(samples.times)}, every {args.poll_ms} ms")
    for name, found, positions in (
        ("request log", ids[0], samples.request_log),
        ("balances", ids[1], samples.balances),
    ):
        lag = lags(ok, found, samples.times, positions)
        print(
            f"{name} lag: p50 {1000 * percentile(lag, 0.5):,.0f} ms, p99 {1000 * percentile(lag, 0.99):,.0f} ms, "
            f"max {1000 * max(lag):,.0f} ms ({len(lag)} requests)"
        )
    if len(ok) != len(answers):
        raise SystemExit(f"{len(answers) - len(ok)} requests failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second to send")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64, help="at most this many requests in flight")
    parser.add_argument("--serve-workers", type=int, default=1)
    parser.add_argument("--poll-ms", type=float, default=5.0, help="how often the positions are read")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, schema() as schema_name, processes() as started:
        try:
            run(args, Path(tmp), schema_name, started)
        except BaseException:
            for log in sorted(Path(tmp).glob("*.log")):
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
            raise


if __name__ == "__main__":
    main()
