"""One event per request that reached a provider (or failed trying).

The record's id is the request id, so a request is recorded — and charged — at
most once: a second record for the same id collides in the event store. A
completed request's record is saved in the same transaction as its settlement.
"""

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event


class RequestRecord(Aggregate):
    class Completed(Aggregate.Created):
        details: dict[str, Any]

    class Failed(Aggregate.Created):
        details: dict[str, Any]

    def __init__(self, details: dict[str, Any]) -> None:
        self.details = details
        self.attempts: list[dict[str, Any]] = []

    def attempt_failed(self, **attempt: Any) -> None:
        """An upstream attempt that failed before another one served (or failed) the request."""
        self._attempt_failed(attempt=attempt)

    @event("AttemptFailed")
    def _attempt_failed(self, attempt: dict[str, Any]) -> None:
        self.attempts.append(attempt)

    @property
    def succeeded(self) -> bool:
        return self.details.get("outcome") == "completed"

    @classmethod
    def completed(cls, request_id: UUID, **details: Any) -> "RequestRecord":
        return cls._create(cls.Completed, id=request_id, details={"outcome": "completed", **details})

    @classmethod
    def failed(cls, request_id: UUID, **details: Any) -> "RequestRecord":
        return cls._create(cls.Failed, id=request_id, details={"outcome": "failed", **details})
