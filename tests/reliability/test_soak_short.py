"""The short variant of the soak (soak.py): 30 s of mixed traffic at concurrency 32 against
one ``serve``: no errors, RSS growth after warm-up under 10 %, open descriptors flat, the
read models caught up at the end, and the books add up."""

from pathlib import Path

from tests.reliability.soak import run


def test_thirty_seconds_of_mixed_traffic_leave_no_errors_no_growth_and_exact_books(tmp_path: Path) -> None:
    report = run(30, 32, tmp_path)
    assert report.ok, (report.problems, report.errors)
    assert report.requests > 100, report.requests
    assert report.projection_lag_end == 0
