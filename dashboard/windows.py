"""Time windows of the dashboard: half-open ``[since, until)`` in UTC, on whole hours.

Invariant kept here: every window starts and ends on a UTC hour, so it selects whole
buckets of the hourly usage rollups and exactly the request-log rows whose timestamps
fall in those buckets — the two read models then agree on what "this window" means.
The previous period is the window of the same length that ends where this one starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

PRESETS: dict[str, timedelta] = {
    "Last 24 hours": timedelta(hours=24),
    "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30),
    "Last 90 days": timedelta(days=90),
}


def floor_hour(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime

    def __post_init__(self) -> None:
        for at in (self.since, self.until):
            if at.tzinfo is None or floor_hour(at) != at:
                raise ValueError(f"a window bound must be a whole UTC hour, got {at!r}")
        if self.until <= self.since:
            raise ValueError("a window must end after it starts")

    @property
    def span(self) -> timedelta:
        return self.until - self.since

    @property
    def previous(self) -> Window:
        return Window(self.since - self.span, self.since)

    @property
    def bucket(self) -> timedelta:
        """Hourly points up to two days, daily points beyond."""
        return HOUR if self.span <= 2 * DAY else DAY

    @property
    def hourly(self) -> bool:
        return self.bucket == HOUR

    def bucket_starts(self) -> list[datetime]:
        step, starts, at = self.bucket, [], self.since
        while at < self.until:
            starts.append(at)
            at += step
        return starts

    def bucket_of(self, at: datetime) -> datetime:
        """The start of the bucket ``at`` falls in (buckets are counted from ``since``)."""
        return self.since + ((at - self.since) // self.bucket) * self.bucket

    def label(self) -> str:
        fmt = "%Y-%m-%d %H:%M"
        return f"{self.since.strftime(fmt)} → {self.until.strftime(fmt)} UTC"


def last(span: timedelta, now: datetime) -> Window:
    """The ``span`` ending with the current hour (the current hour included)."""
    until = floor_hour(now) + HOUR
    return Window(until - span, until)


def whole_days(first: date, last_day: date) -> Window:
    """From ``first`` 00:00 UTC to the end of ``last_day`` (inclusive of that day)."""
    if last_day < first:
        first, last_day = last_day, first
    since = datetime.combine(first, time(0), tzinfo=UTC)
    return Window(since, datetime.combine(last_day, time(0), tzinfo=UTC) + DAY)
