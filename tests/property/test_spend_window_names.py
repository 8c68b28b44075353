"""A spend-cap window's name is stored in every hold and refund event, so it must never
change: ``windows_at`` names the day and the month exactly as ``strftime`` did, for any
moment in any time zone."""

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from domain.spend_caps import windows_at

zones = st.builds(lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-23 * 60 - 59, 23 * 60 + 59))


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC) | zones))
def test_windows_are_named_as_strftime_names_them(now: datetime) -> None:
    utc = now.astimezone(UTC)
    assert windows_at(now) == {"day": utc.strftime("%Y-%m-%d"), "month": utc.strftime("%Y-%m")}


def test_a_moment_before_midnight_elsewhere_is_in_the_next_utc_day() -> None:
    at = datetime(2026, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=-1)))
    assert windows_at(at) == {"day": "2027-01-01", "month": "2027-01"}
