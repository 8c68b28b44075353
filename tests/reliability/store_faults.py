"""Store faults (issue 20, item 3): PostgreSQL unreachable for a while under load, through a
TCP proxy of the run's own that is cut and restored (the shared PostgreSQL is never touched).

Promised: while the store is cut, credits mode fails closed — every request is answered 200
(served and billed before the cut bit) or 503 ``store_unavailable``, never a 500, and nothing
is served unbilled; once the proxy is back the gateway recovers by itself (no restart);
every 200 is charged exactly its receipt, no 503 is charged, ``tallyhub verify`` passes and the
read models equal a rebuild from zero.

    python -m tests.reliability.store_faults --cut-seconds 10"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.reliability.crash_run import Report, check_charges, refunds_of
from tests.reliability.harness import Outcome, Setup, chat, set_up, tear_down, wait_until
from tests.support.gateway import cli
from tests.support.tcp_proxy import TcpProxy

CALLERS = 3


@dataclass
class FaultReport:
    cut_seconds: float
    during_cut: dict[str, int] = field(default_factory=dict)
    slowest_answer_during_cut_s: float = 0.0
    recovered_after_s: float = 0.0  # from the end of the callers of the cut (which is after the restore)
    store_errors_logged: int = 0  # the serve process's log lines that say it lost the store
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def callers_during(setup: Setup, seconds: float, timings: list[float]) -> list[Outcome]:
    """CALLERS callers sending plain requests one after another for ``seconds``."""
    url, outcomes = setup.fleet.serve_urls()[0], list[Outcome]()

    async def one() -> None:
        async with httpx.AsyncClient(timeout=180) as client:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                started = time.monotonic()
                outcomes.append(await chat(client, url, setup.api_key, stream=False))
                timings.append(time.monotonic() - started)

    await asyncio.gather(*[one() for _ in range(CALLERS)])
    return outcomes


def answers(setup: Setup, seen: list[Outcome]) -> bool:
    seen.append(asyncio.run(_one(setup)))
    return seen[-1].status == 200


async def _one(setup: Setup) -> Outcome:
    async with httpx.AsyncClient(timeout=180) as client:
        return await chat(client, setup.fleet.serve_urls()[0], setup.api_key, stream=False)


def run(cut_seconds: float, data_dir: Path) -> FaultReport:
    report = FaultReport(cut_seconds)
    proxy = TcpProxy("127.0.0.1", 5432).start()
    setup = set_up(data_dir, mode="postgres", serves=1, workers=0, pg_port=proxy.port)
    try:
        outcomes = asyncio.run(callers_during(setup, 2, []))  # the store reachable
        proxy.cut()
        restorer = threading.Timer(cut_seconds, proxy.restore)  # back after cut_seconds, whatever callers wait on
        restorer.start()
        timings: list[float] = []
        during = asyncio.run(callers_during(setup, cut_seconds, timings))
        restorer.join()
        restored = time.monotonic()
        probes: list[Outcome] = []
        wait_until(lambda: answers(setup, probes), 120, "a 200 after the restore")
        report.recovered_after_s = round(time.monotonic() - restored, 2)
        report.slowest_answer_during_cut_s = round(max(timings, default=0.0), 2)
        report.during_cut = dict(Counter(f"{o.status} {_code(o)}".strip() for o in during))
        for outcome in during:
            if outcome.status not in (200, 503) or (outcome.status == 503 and _code(outcome) != "store_unavailable"):
                report.problems.append(f"during the cut: {outcome.status} {outcome.error}")
        outcomes += during + probes + asyncio.run(callers_during(setup, 2, []))  # and reachable again
        books = Report(0, "postgres", cut_seconds)
        setup.fleet.stop_all()
        logs = setup.fleet.logs()
        report.store_errors_logged = logs.count("projection catch-up failed") + logs.count("store_unavailable")
        verify = cli(setup.fleet.env, "verify", check=False)
        if verify.get("ok") is not True:
            report.problems.append(f"verify failed: {verify.get('problems')}")
        tables = setup.store.tables()
        cli(setup.fleet.env, "projections", "rebuild")
        if setup.store.tables() != tables:
            report.problems.append("the read models differ from a rebuild from zero")
        check_charges(setup.store.charges(), refunds_of(setup.store), outcomes, (0, 0), books)
        report.problems += books.problems
    finally:
        tear_down(setup)
        proxy.stop()
    return report


def _code(outcome: Outcome) -> str:
    try:
        return str(json.loads(outcome.error)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return outcome.error[:80]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cut-seconds", type=float, default=10)
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temporary directory")
    args = parser.parse_args(argv)
    if args.data_dir:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        report = run(args.cut_seconds, args.data_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="tallyhub-store-faults-") as tmp:
            report = run(args.cut_seconds, Path(tmp))
    print(json.dumps({"ok": report.ok, **report.__dict__}, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
