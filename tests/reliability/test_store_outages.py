"""The short variants of store_outages.py, on a PostgreSQL and a Redis of the test's own (the
shared servers are never touched) and on a small tmpfs: PostgreSQL restarted and then down
for 10 s, Redis down for 5 s, in turn under one load in server mode; SQLite's disk full for
4 s. Every answer is a 200 or a 503 ``store_unavailable``, an outage's within a few seconds,
and no 503 is charged net (one whose settlement landed is refunded by its void: finding 5);
the gateway recovers by itself; ``verify`` passes and the read models equal a rebuild.

Longer runs: ``python -m tests.reliability.store_outages --fault pg-down:180`` (the module's
docstring), or here with ``TALLYHUB_STORE_OUTAGE_SECONDS=180``."""

import os
import subprocess
from pathlib import Path

import pytest

from tests.reliability.private_servers import postgres_available, redis_available
from tests.reliability.store_outages import DiskUnavailable, mount_tmpfs, run

OUTAGE_SECONDS = float(os.environ.get("TALLYHUB_STORE_OUTAGE_SECONDS", "10"))


def test_postgresql_restarted_or_down_and_redis_down_fail_closed_promptly_and_recover(tmp_path: Path) -> None:
    reason = postgres_available() or redis_available()
    if reason:
        pytest.skip(reason)
    report = run([("pg-restart", 0), ("pg-down", OUTAGE_SECONDS), ("redis-down", OUTAGE_SECONDS / 2)], tmp_path)
    assert report.ok, report.problems
    restart, down, redis = report.faults
    assert down.during_fault.get("plain 503", 0) + down.during_fault.get("stream 503", 0) >= 1, down
    assert sum(redis.during_fault.values()) >= 1, redis  # served meanwhile (judged: every one a 200)
    assert redis.limits_failed_open >= 1, redis  # admitted by a limiter that could not reach Redis
    assert max(r.recovered_after_s for r in report.faults) < 30, report.faults


def test_sqlite_disk_full_fails_closed_and_recovers_once_space_is_freed(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    probe.mkdir()
    reason = mount_tmpfs(probe)
    if reason:
        pytest.skip(reason)
    subprocess.run(["umount", str(probe)], check=True)  # the probe proved mounting works
    try:
        report = run([("sqlite-full", 4)], tmp_path)
    except DiskUnavailable as error:
        pytest.skip(str(error))
    assert report.ok, report.problems
    (full,) = report.faults
    assert full.during_fault.get("plain 503", 0) >= 1, full
