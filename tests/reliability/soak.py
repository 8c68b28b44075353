"""Soak (issue 20, item 6): mixed traffic — plain and streamed chat, grants, payment
webhooks, admin reads — at a fixed concurrency against one real ``tallyhub serve``
(embedded, SQLite) for a while, reporting:

- errors: every answer that is not a success (there is no fault in this run, so every
  error is unexplained);
- the serve process's RSS after warm-up (the first fifth of the run) and at the end, and
  its growth in percent;
- open file descriptors after warm-up and at the end;
- projection lag (events the read models had not applied yet), sampled once a second;
- and the books: ``tallyhub verify`` passes and every 200's receipt is charged exactly once.

    python -m tests.reliability.soak --seconds 600 --concurrency 32

prints a JSON report; exit status 1 when errors happened, RSS grew by 10 % or more after
warm-up, the open descriptors grew by more than FD_SLACK, or the books do not add up."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.reliability.crash_run import Report, check_charges, check_credits, refunds_of
from tests.reliability.harness import Outcome, Setup, chat, grant, payment, set_up, tear_down, wait_until
from tests.support.gateway import cli

MAX_RSS_GROWTH_PERCENT = 10.0
FD_SLACK = 8  # descriptors a busy server may hold open for a moment (sockets, the SQLite journal)


@dataclass
class SoakReport:
    seconds: float
    concurrency: int
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    rss_after_warmup_kib: int = 0
    rss_end_kib: int = 0
    rss_growth_percent: float = 0.0
    fds_after_warmup: int = 0
    fds_end: int = 0
    max_projection_lag: int = 0
    projection_lag_end: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def projection_lag(client: httpx.Client, url: str, admin_key: str) -> int:
    response = client.get(url + "/admin/v1/projections", headers={"authorization": f"Bearer {admin_key}"})
    response.raise_for_status()
    return max(int(row["lag"]) for row in response.json()["data"])


async def caller(index: int, setup: Setup, deadline: float, outcomes: list[Outcome]) -> None:
    rng = random.Random(index)
    url = setup.fleet.serve_urls()[0]
    serial = 0
    async with httpx.AsyncClient(timeout=60) as client:
        while time.monotonic() < deadline:
            roll = rng.random()
            if roll < 0.5:
                outcomes.append(await chat(client, url, setup.api_key, stream=False))
            elif roll < 0.9:
                outcomes.append(await chat(client, url, setup.api_key, stream=True))
            elif roll < 0.94:
                serial += 1
                outcomes.append(await grant(client, url, setup.fleet.admin_key, f"soak-{index}-{serial}"))
            elif roll < 0.97:
                serial += 1
                outcomes.append(await payment(client, url, f"soak-pay-{index}-{serial}"))
            else:
                outcomes.append(await admin_read(client, url, setup.fleet.admin_key))


async def admin_read(client: httpx.AsyncClient, url: str, admin_key: str) -> Outcome:
    outcome = Outcome("admin", None)
    try:
        response = await client.get(
            url + "/admin/v1/requests?limit=20", headers={"authorization": f"Bearer {admin_key}"}
        )
        outcome.status = response.status_code
        if response.status_code != 200:
            outcome.error = response.text[:300]
    except httpx.TransportError as error:
        outcome.error = f"{type(error).__name__}: {error}"
    return outcome


def sampler(setup: Setup, started: float, seconds: float, report: SoakReport, stop: list[bool]) -> None:
    """Once a second: projection lag; at the end of warm-up: RSS and descriptors."""
    proc = setup.fleet.procs[0]
    assert proc.process is not None
    pid, url = proc.process.pid, setup.fleet.serve_urls()[0]
    warmed = False
    with httpx.Client(timeout=30) as client:
        while not stop[0]:
            report.max_projection_lag = max(
                report.max_projection_lag, projection_lag(client, url, setup.fleet.admin_key)
            )
            if not warmed and time.monotonic() - started >= seconds / 5:
                report.rss_after_warmup_kib, report.fds_after_warmup = rss_kib(pid), open_fds(pid)
                warmed = True
            time.sleep(1.0)  # the sampling period
        report.rss_end_kib, report.fds_end = rss_kib(pid), open_fds(pid)
        try:  # the read models catch up once the load stops
            wait_until(lambda: projection_lag(client, url, setup.fleet.admin_key) == 0, 60, "the read models caught up")
        except AssertionError as error:
            report.problems.append(str(error))
        report.projection_lag_end = projection_lag(client, url, setup.fleet.admin_key)


async def drive(setup: Setup, seconds: float, concurrency: int, report: SoakReport) -> list[Outcome]:
    outcomes: list[Outcome] = []
    started = time.monotonic()
    stop = [False]
    watching = asyncio.create_task(asyncio.to_thread(sampler, setup, started, seconds, report, stop))
    await asyncio.gather(*[caller(i, setup, started + seconds, outcomes) for i in range(concurrency)])
    stop[0] = True
    await watching
    return outcomes


def judge(setup: Setup, outcomes: list[Outcome], report: SoakReport) -> None:
    report.requests = len(outcomes)
    report.errors = [f"{o.kind} {o.status}: {o.error}" for o in outcomes if not _succeeded(o)][:20]
    problems = report.problems
    if report.errors:
        problems.append(f"{sum(not _succeeded(o) for o in outcomes)} unexplained error(s)")
    if report.rss_after_warmup_kib:
        growth = 100.0 * (report.rss_end_kib - report.rss_after_warmup_kib) / report.rss_after_warmup_kib
        report.rss_growth_percent = round(growth, 2)
        if growth >= MAX_RSS_GROWTH_PERCENT:
            problems.append(f"RSS grew {growth:.1f} % after warm-up")
    else:
        problems.append("the run ended before warm-up did: no RSS baseline")
    if report.fds_end > report.fds_after_warmup + FD_SLACK:
        problems.append(f"open descriptors grew from {report.fds_after_warmup} to {report.fds_end}")
    setup.fleet.stop_all()
    verify = cli(setup.fleet.env, "verify", check=False)
    if verify.get("ok") is not True:
        problems.append(f"verify failed: {verify.get('problems')}")
    charges = setup.store.charges()
    chats = [o for o in outcomes if o.kind in ("plain", "stream")]
    costs = (0, 0)  # no cut streams and no unanswered callers in a run without faults
    books = Report(0, "embedded", report.seconds)
    check_charges(charges, refunds_of(setup.store), chats, costs, books)
    check_credits(setup.store.grants(), outcomes, books.problems)
    problems.extend(books.problems)


def _succeeded(outcome: Outcome) -> bool:
    return outcome.status is not None and outcome.status < 300 and (outcome.kind != "stream" or outcome.complete)


def run(seconds: float, concurrency: int, data_dir: Path) -> SoakReport:
    report = SoakReport(seconds, concurrency)
    setup = set_up(data_dir, mode="embedded", serves=1, workers=0, chunk_delay=0.01)
    try:
        outcomes = asyncio.run(drive(setup, seconds, concurrency, report))
        judge(setup, outcomes, report)
    finally:
        tear_down(setup)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tallyhub-soak-") as tmp:
        report = run(args.seconds, args.concurrency, Path(tmp))
    result: dict[str, Any] = {"ok": report.ok, **report.__dict__}
    print(json.dumps(result, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
