"""Reading history fast: the stored events of some topics, in notification order,
decoded straight from their JSON state.

Replay, verify and the benchmarks read every charge ever made; decoding each event
into a domain object through the application's mapper costs more than the arithmetic
done with it. Events are stored uncompressed and unencrypted by eventsourcing's JSON
transcoder, so their state is plain JSON in which the transcoder's own types appear as
``{"_type_": "uuid_hex" | "datetime_iso", "_data_": text}``; ``uuid_of`` and
``time_of`` read those. Invariant: nothing here writes, and every event of the chosen
topics up to ``stop`` is yielded exactly once, in position order, its integers exact
however large (orjson reads those beyond 64 bits as floats: such a state is read by
the standard parser instead).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

import orjson
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

BATCH = 10_000
_LONG_NUMBER = re.compile(rb"[0-9]{19}")  # 19 digits and more may be beyond 64 bits
Progress = Callable[[int, int], None]  # (position reached, last position), for progress bars


class NotificationRecorder(Protocol):
    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]: ...

    def max_notification_id(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class StoredEvent:
    position: int
    originator_id: UUID
    version: int
    topic: str
    state: dict[str, Any]

    @property
    def timestamp(self) -> datetime:
        return time_of(self.state["timestamp"])


def topics_of(*event_classes: type[DomainEventProtocol[Any]]) -> tuple[str, ...]:
    return tuple(sorted(get_topic(cls) for cls in event_classes))


def scan(
    recorder: NotificationRecorder,
    topics: Iterable[str],
    *,
    after: int = 0,
    stop: int | None = None,
    progress: Progress | None = None,
    batch: int = BATCH,
) -> Iterator[StoredEvent]:
    """Every event of ``topics`` with ``after < position <= stop`` (stop: the last now)."""
    wanted = sorted(set(topics))
    last = last_position(recorder) if stop is None else stop
    position = after
    while position < last:
        found = recorder.select_notifications(position, batch, stop=last, topics=wanted, inclusive_of_start=False)
        for n in found:
            yield StoredEvent(n.id, _uuid(n.originator_id), n.originator_version, n.topic, exact_state(n.state))
        if len(found) < batch:
            break
        position = found[-1].id
        if progress is not None:
            progress(position, last)
    if progress is not None:
        progress(last, last)


def exact_state(state: bytes) -> dict[str, Any]:
    """An event's JSON state with every integer a Python int, however large."""
    decoded: dict[str, Any] = orjson.loads(state) if _LONG_NUMBER.search(state) is None else json.loads(bytes(state))
    return decoded


def last_position(recorder: NotificationRecorder) -> int:
    return recorder.max_notification_id() or 0


def uuid_of(value: Any) -> UUID:
    """A UUID as the transcoder stores it (or as plain hex text)."""
    return UUID(value["_data_"] if isinstance(value, dict) else value)


def time_of(value: Any) -> datetime:
    return datetime.fromisoformat(value["_data_"] if isinstance(value, dict) else value)


def _uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))
