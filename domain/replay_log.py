"""The applied replays: which price book re-priced which charges, in order.

A replay re-prices the charges in a window from their recorded usage and posts the
per-account differences as adjustments. Invariants kept here:
- entries are appended, never edited; entry ``n`` (its ``sequence``) was computed
  against entries ``1..n-1``, so the price a charge stands at is the price of the last
  entry whose window and account cover it and that ran after it was recorded
  (``last_position``), or its recorded cost when none does;
- an entry names the adjustment each account is due (signed nanocredits, never 0) and
  the idempotency key it is posted under, so posting it twice moves credit once;
- two replays computed against the same entries cannot both be appended: the second
  save collides (the log's version) and is recomputed against the first.
"""

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain import ids
from domain.errors import InvalidRequest


class ReplayLog(Aggregate):
    class Opened(Aggregate.Created):
        pass

    class ReplayApplied(Aggregate.Event):
        sequence: int
        replay_id: str
        prices: dict[str, dict[str, Any]]
        since: datetime | None
        until: datetime | None
        account_id: str | None
        adjustments: dict[str, int]
        charges: int
        last_position: int
        applied_at: datetime

    @staticmethod
    def create_id() -> UUID:
        return ids.REPLAY_LOG_ID

    @event(Opened)
    def __init__(self) -> None:
        self.replays: list[dict[str, Any]] = []

    def record_applied(
        self,
        replay_id: str,
        prices: dict[str, dict[str, Any]],
        since: datetime | None,
        until: datetime | None,
        account_id: str | None,
        adjustments: dict[str, int],
        charges: int,
        last_position: int,
        at: datetime,
    ) -> dict[str, Any]:
        """Append an applied replay; returns its entry."""
        if any(entry["replay_id"] == replay_id for entry in self.replays):
            raise InvalidRequest(f"replay {replay_id} is recorded already")
        for account, amount in adjustments.items():
            if not isinstance(amount, int) or isinstance(amount, bool) or amount == 0:
                raise InvalidRequest(f"replay adjustment for {account} must be a non-zero integer")
        self._replay_applied(
            sequence=len(self.replays) + 1,
            replay_id=replay_id,
            prices=prices,
            since=since,
            until=until,
            account_id=account_id,
            adjustments=dict(sorted(adjustments.items())),
            charges=charges,
            last_position=last_position,
            applied_at=at,
        )
        return self.replays[-1]

    @event(ReplayApplied)
    def _replay_applied(
        self,
        sequence: int,
        replay_id: str,
        prices: dict[str, dict[str, Any]],
        since: datetime | None,
        until: datetime | None,
        account_id: str | None,
        adjustments: dict[str, int],
        charges: int,
        last_position: int,
        applied_at: datetime,
    ) -> None:
        self.replays.append(
            {
                "sequence": sequence,
                "replay_id": replay_id,
                "prices": prices,
                "since": since,
                "until": until,
                "account_id": account_id,
                "adjustments": adjustments,
                "charges": charges,
                "last_position": last_position,
                "applied_at": applied_at,
            }
        )


def covers(entry: dict[str, Any], account_id: str, at: datetime, position: int) -> bool:
    """Whether the replay ``entry`` re-priced the charge of ``account_id`` (hex) made at ``at``
    and recorded at ``position``: a replay re-prices only what was recorded when it ran."""
    return (
        position <= entry["last_position"]
        and (entry["account_id"] is None or entry["account_id"] == account_id)
        and (entry["since"] is None or at >= entry["since"])
        and (entry["until"] is None or at < entry["until"])
    )


def adjustment_key(entry: dict[str, Any]) -> str:
    """The idempotency key an entry's adjustments are posted under."""
    return f"replay:{entry['replay_id']}"
