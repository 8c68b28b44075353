"""Voiding a plain request answered 503 ``store_unavailable`` (docs/reliability.md, finding 5).

A plain request's caller is answered only once its settlement is durable. When the store
fails that settlement transiently (application/pending_settlements.py ``transient``), the
caller is answered 503 ``store_unavailable`` — "charged nothing" — although the commit may
have landed all the same (the connection was lost after the server committed: an ambiguous
commit). ``Void`` is the account command that makes the answer true once the store is back:
application/calls.py keeps it pending and retries it like a pending stream settlement.

Invariants:
- one account command, run by the account's writer in order with its other changes (the
  hold sweep, grants, other requests), on the account's current state:
  the request's hold still open → released (``RELEASE_REASON``) and the request recorded
  failed, 503 ``store_unavailable``; else its record found completed and charged → the
  charge refunded exactly (``Account.refund_charge``, the reason naming
  ``store_unavailable``), so charge and refund net zero, and the spend-cap counts of the
  windows the charge was counted in (the record's key and start, as its hold was placed
  with) go down by it: "charged nothing" holds for the caps too; else no record → the
  failure recorded alone (its hold was released by the sweep: nothing is held or charged);
  else (recorded failed, refunded already, or charged nothing) → nothing;
- exactly once: a second void of the request finds the hold gone and the refund's receipt
  (``REFUND_KIND``, keyed by the request: domain/account.py) or the failure's record, and
  does nothing; a void racing another collides with it in the store and is re-run on the
  state it left;
- a late commit never charges after the void ran: the settlement and the void each save the
  request's record, whose id is the request id, and each write the account at the version
  they read. Whichever transaction the store takes first, the other is refused whole
  (IntegrityError) — a settlement is then re-run by its writer and finds the request
  recorded (application/billing.py ``_Settlement``: nothing more), a void is re-run and
  finds the charge to refund. So exactly one of "settle landed" / "release landed" wins, and
  a request answered 503 is charged nothing net, whatever order the store saw them in.
"""

from collections.abc import Callable, Sequence
from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate

from application.ledger import Ledger
from domain.account import REFUND_KIND, Account, MovementReceipt
from domain.request_record import RequestDetails, RequestRecord

STORE_UNAVAILABLE = "store_unavailable"  # the error code the caller was answered (adapters/http/errors.py)
RELEASE_REASON = "answered 503 store_unavailable: the settlement was not confirmed"
REFUND_REASON = "answered 503 store_unavailable: its settlement had landed unconfirmed"


class Void:
    """The account command voiding one request answered 503 ``store_unavailable``; ``record``
    builds the request's failure record afresh on each run (a refused save drains its events)."""

    def __init__(self, ledger: Ledger, request_id: UUID, record: Callable[[], RequestRecord]) -> None:
        self.ledger, self.request_id, self.record = ledger, request_id, record
        self.outcome = "pending"  # released, refunded, recorded or nothing: what the last run decided

    def __call__(self, account: Account) -> Sequence[Aggregate] | None:
        request_id = self.request_id
        if request_id.hex in account.holds:
            account.release_hold(request_id, reason=RELEASE_REASON)
            return self._decided("released", [self.record()])
        found = self.ledger.find(request_id)
        if found is None:
            return self._decided("recorded", [self.record()])
        if not isinstance(found, RequestRecord) or not found.succeeded or found.details.charge <= 0:
            return self._decided("nothing", None)  # failed (this void's, or the caller left), or free
        if self.ledger.find(MovementReceipt.create_id(account.id, REFUND_KIND, request_id.hex)) is not None:
            return self._decided("nothing", None)  # refunded already
        return self._decided("refunded", [self._refund(account, found.details)])

    def _refund(self, account: Account, charged: RequestDetails) -> MovementReceipt:
        started_at = datetime.fromisoformat(charged.started_at) if charged.started_at else None
        return account.refund_charge(
            self.request_id, charged.charge, REFUND_REASON, api_key_id=charged.api_key_uuid, started_at=started_at
        )

    def _decided(self, outcome: str, saves: list[Aggregate] | None) -> list[Aggregate] | None:
        self.outcome = outcome
        return saves
