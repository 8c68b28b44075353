"""The short variant of store_faults.py: PostgreSQL cut for 10 s under load (through a proxy
of the test's own; the shared server is never touched) → every answer 200 or 503
``store_unavailable`` (never a 500), recovery without a restart, exact books, ``verify``
passes, read models equal a rebuild."""

from pathlib import Path

import pytest

from tests.reliability.store_faults import run

pytestmark = [pytest.mark.postgres]


def test_postgresql_unreachable_for_ten_seconds_fails_closed_and_recovers_by_itself(tmp_path: Path) -> None:
    report = run(10, tmp_path)
    assert report.ok, report.problems
    assert report.store_errors_logged >= 1, "the gateway never lost the store: the cut proved nothing"
    assert sum(report.during_cut.values()) >= 1, report.during_cut
