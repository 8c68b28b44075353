"""Histories written at chosen times: every event created inside ``events_stamped_by`` is
stamped with what its ``now`` returns (eventsourcing reads one class-wide clock)."""

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime

from eventsourcing.domain import CanCreateTimestamp


@contextmanager
def events_stamped_by(now: Callable[[], datetime]) -> Iterator[None]:
    original = CanCreateTimestamp.__dict__["create_timestamp"]
    CanCreateTimestamp.create_timestamp = staticmethod(now)  # type: ignore[method-assign]
    try:
        yield
    finally:
        CanCreateTimestamp.create_timestamp = original  # type: ignore[method-assign]


def events_stamped_at(at: datetime) -> AbstractContextManager[None]:
    """Every event created meanwhile is stamped ``at``."""
    return events_stamped_by(lambda: at)
