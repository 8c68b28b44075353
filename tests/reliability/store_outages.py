"""Store faults with servers of the run's own (issue 20, item 3): a private PostgreSQL
restarted under load or stopped for a while, a private Redis stopped and started, and
SQLite's disk filled (a small tmpfs). The machine's shared PostgreSQL and Redis are never
touched (tests/reliability/private_servers.py).

Promised, for every fault, in credits mode:
- every answer is a 200 (served and billed: its receipt is its one charge) or a 503
  ``store_unavailable`` (charged nothing net), never a 500. A plain request whose settlement
  landed as the store went away (an ambiguous commit) is answered 503 and its void refunds the
  charge once the store is back (application/voids.py): counted as ``answered_503_refunded``;
  a 503 with any net charge is a problem. A stream whose settlement could not be
  saved ends without its receipt; its settlement is kept pending and saved once the store is
  back (application/pending_settlements.py), so it is charged its whole answer once, or
  nothing when the store stayed away past its hold's deadline. Counted, once every hold is
  closed: ``streams_cut_charged`` (charged later) and ``streams_cut_unbilled`` (cut and never
  charged: docs/reliability.md, finding 4);
- PostgreSQL away longer than a restart: a request is answered within ``answer_bound`` (twice
  ``TALLYHUB_STORE_TIMEOUT_SECONDS`` and a margin: it may wait for the batch being saved before
  its own, application/group_commit.py); the timeout is ``STORE_TIMEOUT_SECONDS`` unless
  ``--store-timeout`` says;
- Redis down: every request is served (rate limits fail open, counted in ``/metrics``; money
  is guarded by the holds in PostgreSQL), and the worker's read models catch up by polling;
  once Redis is back the limiter keeps its windows there again;
- the gateway recovers by itself once the store is back (no restart), within
  ``RECOVERY_BOUND_SECONDS``;
- afterwards no event is lost: ``tallyhub verify`` passes, the read models equal a rebuild
  from zero, every hold is closed, the balance is the grants minus the charges.

    python -m tests.reliability.store_outages --fault pg-restart:0 --fault pg-down:180 --fault redis-down:30
    python -m tests.reliability.store_outages --fault sqlite-full:30

prints a JSON report; exit status 1 when a check failed."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from adapters.http.errors import STORE_UNAVAILABLE
from tests.reliability.crash_run import Report, check, summarise
from tests.reliability.harness import ACCOUNT, Outcome, Setup, chat, full_costs, set_up, tear_down, wait_until
from tests.reliability.private_servers import PrivatePostgres, PrivateRedis

FAULTS = ("pg-restart", "pg-down", "redis-down", "sqlite-full")
STORE_TIMEOUT_SECONDS = 2
RECOVERY_BOUND_SECONDS = 30
CALLERS = 4  # callers 0 and 2 send plain requests, 1 and 3 streams
TMPFS_BYTES = 64 * 1024 * 1024  # room for the databases and their write-ahead logs before the fault; filled at once
# A stream's settlement the store failed is retried until its hold's deadline (900 s by default):
# 20 s here outlasts the short outages, so a cut stream is charged once the store is back
RUN_SETTINGS = {"TALLYHUB_HOLD_TTL_SECONDS": "20", "TALLYHUB_SWEEP_INTERVAL_SECONDS": "1"}


@dataclass
class Timed:
    started: float
    seconds: float
    outcome: Outcome


@dataclass
class FaultResult:
    fault: str
    seconds: float  # how long the store stayed away (a restart: 0, as quick as the server's own)
    during_fault: dict[str, int] = field(default_factory=dict)  # answers in flight or asked meanwhile
    slowest_answer_during_fault_s: float = 0.0
    recovered_after_s: float = 0.0  # from the store's return to a 200 from every ``serve``
    limits_failed_open: int = 0  # redis-down: requests admitted without rate limits (every serve's /metrics)


@dataclass
class OutageReport:
    faults: list[FaultResult] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    streams_cut_unbilled: int = 0  # a stream relayed, its settlement not saved, and never charged (finding 4)
    streams_cut_charged: int = 0  # a stream relayed, its settlement not saved at its end, charged later
    answered_503_refunded: int = 0  # a plain 503 whose settlement landed, then refunded by its void (finding 5)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class Load:
    """CALLERS callers in a thread of their own, each sending requests one after another until
    ``stop()``; every answer with when it was asked and how long it took."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.answers: list[Timed] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="load", daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping.set()
        self._thread.join(120)

    async def _run(self) -> None:
        await asyncio.gather(*[self._caller(i) for i in range(CALLERS)])

    async def _caller(self, index: int) -> None:
        urls = self.setup.fleet.serve_urls()
        url = urls[index // 2 % len(urls)]  # each ``serve`` gets a plain and a streaming caller
        async with httpx.AsyncClient(timeout=300) as client:
            while not self._stopping.is_set():
                started = time.monotonic()
                outcome = await chat(client, url, self.setup.api_key, stream=index % 2 == 1)
                self.answers.append(Timed(started, time.monotonic() - started, outcome))
                if outcome.status != 200:
                    await asyncio.sleep(0.05)  # a refused caller asks again, not in a tight loop


def answered(setup: Setup, probes: list[Outcome]) -> bool:
    """One plain request to every ``serve`` (kept in ``probes``, whose charges are checked too):
    each answered 200? Each process has its own store connections and breaker, and recovers
    on its own."""

    async def each() -> list[Outcome]:
        async with httpx.AsyncClient(timeout=60) as client:
            urls = setup.fleet.serve_urls()
            return list(await asyncio.gather(*[chat(client, url, setup.api_key, stream=False) for url in urls]))

    outcomes = asyncio.run(each())
    probes.extend(outcomes)
    return all(outcome.status == 200 for outcome in outcomes)


def served_since(answers: list[Timed], since: int) -> set[str]:
    """The kinds of request answered 200 among ``answers[since:]``."""
    return {t.outcome.kind for t in answers[since:] if t.outcome.status == 200}


def answer_bound(store_timeout: int) -> float:
    """How long an answer may take while PostgreSQL is away: the batch being saved before its
    own (application/group_commit.py) and its own, each at most the store timeout."""
    return 2 * store_timeout + 3


def run(
    faults: Sequence[tuple[str, float]], data_dir: Path, store_timeout: int = STORE_TIMEOUT_SECONDS
) -> OutageReport:
    """The ``faults`` one after another, each lasting its seconds, under one load against one
    gateway: ``sqlite-full`` alone (embedded mode), the others in server mode (private
    PostgreSQL and Redis, two ``serve`` and a ``worker``)."""
    report = OutageReport()
    sqlite = [name for name, _ in faults] == ["sqlite-full"]
    with servers(data_dir, sqlite=sqlite, store_timeout=store_timeout) as (setup, breakers):
        plain, stream = full_costs(setup.api_key, setup.fleet.serve_urls()[0])
        probes: list[Outcome] = []
        with Load(setup) as load:
            for name, seconds in faults:
                result = FaultResult(name, seconds)
                report.faults.append(result)
                wait_until(lambda: len(load.answers) >= 2 * CALLERS, 60, "answers before the fault")
                break_store, restore_store = breakers[name]
                fault_started = time.monotonic()
                break_store()
                time.sleep(seconds)
                restore_store()
                restored = time.monotonic()
                result.recovered_after_s = round(
                    wait_until(lambda: answered(setup, probes), RECOVERY_BOUND_SECONDS, f"a 200 after {name}"), 2
                )
                later = len(load.answers)
                # the next fault starts once both the plain and the streaming callers are served
                # again (they call different ``serve`` processes), not only the quicker of them
                wait_until(
                    lambda: served_since(load.answers, later) == {"plain", "stream"}, 60, f"answers after {name}"
                )
                if name == "redis-down":
                    wait_until(lambda: bool(rate_limit_keys(setup)), 30, "the rate limits kept in Redis again")
                    result.limits_failed_open = failed_open(setup)
                judge(load.answers, (fault_started, restored), result, answer_bound(store_timeout), report.problems)
        answers = [t.outcome for t in load.answers]
        for outcome in answers:
            if outcome.status not in (200, 503) or (outcome.status == 503 and STORE_UNAVAILABLE not in outcome.error):
                report.problems.append(f"{outcome.kind} answered {outcome.status}: {outcome.error}")
        assert plain.charge is not None and stream.charge is not None
        books = Report(0, "store outages", 0)
        check(setup, [plain, stream, *probes, *answers], (plain.charge, stream.charge), books)
        report.problems += books.problems
        report.answered_503_refunded = books.answered_503_refunded
        report.outcomes = summarise(answers)
        charged = setup.store.charges()  # read after ``check`` waited for every hold to close
        cut = [o for o in answers if o.kind == "stream" and o.status == 200 and not o.complete]
        report.streams_cut_unbilled = sum(1 for o in cut if o.request_id not in charged)
        report.streams_cut_charged = len(cut) - report.streams_cut_unbilled
    return report


def rate_limit_keys(setup: Setup) -> list[bytes]:
    """The rate-limit windows in the run's Redis (empty after its restart until a limiter writes)."""
    import redis

    client = redis.Redis.from_url(setup.fleet.env["TALLYHUB_REDIS_URL"])
    try:
        return list(client.scan_iter(f"{setup.fleet.env['TALLYHUB_REDIS_PREFIX']}:rl:*", count=1000))
    finally:
        client.close()


def failed_open(setup: Setup) -> int:
    """``tallyhub_rate_limit_failed_open_total`` summed over the ``serve`` processes."""
    total = 0.0
    for url in setup.fleet.serve_urls():
        for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
            if line.startswith("tallyhub_rate_limit_failed_open_total"):
                total += float(line.split()[-1])
    return int(total)


def judge(
    answers: list[Timed], away: tuple[float, float], result: FaultResult, bound: float, problems: list[str]
) -> None:
    """The answers in flight or asked while the store was away: their outcomes and how long they took."""
    fault_started, restored = away
    during = [t for t in answers if t.started + t.seconds >= fault_started and t.started <= restored]
    result.during_fault = summarise([t.outcome for t in during])
    result.slowest_answer_during_fault_s = round(max((t.seconds for t in during), default=0.0), 2)
    if result.fault == "redis-down":
        refused = [t for t in during if t.outcome.status != 200]
        if refused:
            problems.append(
                f"Redis down refused requests: {result.during_fault}: "
                + ", ".join(
                    f"{t.outcome.kind} {t.outcome.status} {t.outcome.request_id} asked at "
                    f"{t.started - fault_started:+.1f} s: {t.outcome.error[:160]}"
                    for t in refused
                )
            )
        return
    slow = [t for t in during if t.seconds > bound]
    if slow:
        problems.append(
            f"{result.fault}: {len(slow)} answers took over {bound} s: "
            + ", ".join(
                f"{t.outcome.kind} {t.outcome.status} {t.outcome.request_id} asked at "
                f"{t.started - fault_started:+.1f} s took {t.seconds:.1f} s"
                for t in slow
            )
        )


Breakers = dict[str, tuple[Callable[[], object], Callable[[], object]]]


@contextmanager
def servers(data_dir: Path, *, sqlite: bool, store_timeout: int) -> Iterator[tuple[Setup, Breakers]]:
    """The gateway, and per fault how to break its store and restore it."""
    settings: dict[str, Any] = {**RUN_SETTINGS, "TALLYHUB_STORE_TIMEOUT_SECONDS": str(store_timeout)}
    if sqlite:  # the databases on the small disk; the logs beside it, where they can be read
        disk = data_dir / "disk"
        disk.mkdir()
        with small_disk(disk) as (fill, free):
            url = f"sqlite:///{disk / 'tallyhub.sqlite'}"
            setup = set_up(data_dir, mode="embedded", serves=1, workers=0, TALLYHUB_DATABASE_URL=url, **settings)
            setup.store.read_models_path = disk / "tallyhub-read-models.sqlite"
            try:
                yield setup, {"sqlite-full": (fill, free)}
            finally:
                tear_down(setup)
        return
    pg = PrivatePostgres().start()
    redis = PrivateRedis().start()
    try:
        setup = set_up(
            data_dir,
            mode="server",
            serves=2,
            workers=1,
            pg_port=pg.port,
            pg_conninfo=pg.conninfo,
            redis_url=redis.url,
            **settings,
        )
        try:  # a limit every request is admitted by: the limiter uses Redis (and fails open without it)
            limited = httpx.put(
                f"{setup.fleet.serve_urls()[0]}/admin/v1/accounts/{ACCOUNT}/limits",
                json={"rpm": 1_000_000},
                headers={"authorization": f"Bearer {setup.fleet.admin_key}"},
                timeout=30,
            )
            assert limited.status_code == 200, limited.text
            down = (lambda: pg.stop("immediate"), pg.start)
            yield setup, {"pg-restart": down, "pg-down": down, "redis-down": (redis.stop, redis.start)}
        finally:
            tear_down(setup)
    finally:
        redis.close()
        pg.close()


def mount_tmpfs(directory: Path) -> str | None:
    """Mount a TMPFS_BYTES tmpfs on ``directory``; None when done, else why it cannot be."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(directory)], capture_output=True, text=True
    )
    return None if done.returncode == 0 else f"mount -t tmpfs not permitted here: {done.stderr.strip()}"


@contextmanager
def small_disk(data_dir: Path) -> Iterator[tuple[Callable[[], object], Callable[[], object]]]:
    """``data_dir`` on a small tmpfs; ``fill()`` takes every free byte, ``free()`` gives them back."""
    reason = mount_tmpfs(data_dir)
    if reason:
        raise DiskUnavailable(reason)
    filler = data_dir / "filler"

    def fill() -> None:
        try:
            with open(filler, "wb") as out:
                while True:
                    out.write(b"\0" * 65536)
                    out.flush()
        except OSError:  # ENOSPC: the disk is full (already, when even the filler cannot be created)
            pass

    def free() -> None:
        filler.unlink(missing_ok=True)

    try:
        yield fill, free
    finally:
        subprocess.run(["umount", "-l", str(data_dir)], check=False)


class DiskUnavailable(RuntimeError):
    """No small tmpfs can be mounted here (not root, or mounting not permitted)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--fault",
        action="append",
        required=True,
        metavar="NAME[:SECONDS]",
        help=f"one of {', '.join(FAULTS)}, with how long the store stays away (default 10; repeat: in turn)",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temporary directory")
    parser.add_argument(
        "--store-timeout", type=int, default=STORE_TIMEOUT_SECONDS, help="TALLYHUB_STORE_TIMEOUT_SECONDS of the run"
    )
    args = parser.parse_args(argv)
    faults = [(name, float(seconds or 10)) for name, _, seconds in (f.partition(":") for f in args.fault)]
    if any(name not in FAULTS for name, _ in faults) or ("sqlite-full" in dict(faults) and len(faults) > 1):
        parser.error(f"faults are {', '.join(FAULTS)}; sqlite-full runs alone")
    if args.data_dir:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        report = run(faults, args.data_dir, args.store_timeout)
    else:
        with tempfile.TemporaryDirectory(prefix="tallyhub-store-outage-") as tmp:
            report = run(faults, Path(tmp), args.store_timeout)
    print(json.dumps({"ok": report.ok, **asdict(report)}, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
