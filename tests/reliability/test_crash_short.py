"""The short variants of the crash-consistency run (crash_run.py): one seed, embedded (SQLite,
one ``serve``) and server mode (PostgreSQL and Redis, two ``serve`` and a ``worker``), each
SIGKILLed at the seed's points under mixed load and checked for the run's promises."""

from pathlib import Path

import pytest

from tests.reliability.crash_run import run

SEED = 20261207


def assert_held(report_ok: bool, problems: list[str], outcomes: dict[str, int], kills: int) -> None:
    assert report_ok, problems
    assert kills >= 1, "nothing was killed: the run proved nothing"
    assert outcomes.get("plain 200", 0) and outcomes.get("stream 200", 0), outcomes
    assert outcomes.get("grant 201", 0) + outcomes.get("payment 200", 0), outcomes


def test_a_seeded_crash_run_embedded_keeps_every_promise(tmp_path: Path) -> None:
    report = run(SEED, 25, "embedded", tmp_path)
    assert_held(report.ok, report.problems, report.outcomes, len(report.kills))


@pytest.mark.postgres
@pytest.mark.redis
def test_a_seeded_crash_run_in_server_mode_keeps_every_promise(tmp_path: Path) -> None:
    report = run(SEED, 20, "server", tmp_path)
    assert_held(report.ok, report.problems, report.outcomes, len(report.kills))
