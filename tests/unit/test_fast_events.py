"""``trigger`` and ``create`` (domain/fast_events.py) are what calling an ``@event`` method and
``_create`` do: a field left out takes its default, fields in another order are stored in the
declared order, an unknown or missing one is a ``TypeError`` before any change; the event is
applied before the aggregate takes its version (a grant's identity is its version), then
pending; only the classes they are written for are accepted."""

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder, Mapper, UUIDAsHex

from domain.account import Account, MovementReceipt
from domain.fast_events import create, trigger
from domain.request_record import RequestRecord

NOW = datetime(2026, 1, 1, tzinfo=UTC)
REQUEST = UUID(int=1)


def mapper() -> Mapper[UUID]:
    transcoder = JSONTranscoder()
    transcoder.register(UUIDAsHex())
    transcoder.register(DatetimeAsISO())
    return Mapper(transcoder=transcoder)


def funded() -> Account:
    account = Account("acme")
    account.grant_credits(1_000, "r")
    account.collect_events()
    return account


def test_a_field_left_out_takes_its_default_and_any_order_is_stored_in_the_declared_one() -> None:
    account = funded()
    trigger(account, Account.HoldPlaced, amount=5, request_id=REQUEST, expires_at=NOW)  # no key, no windows
    (event,) = account.pending_events
    assert isinstance(event, Account.HoldPlaced)
    fields = ["request_id", "amount", "expires_at", "api_key", "day", "month"]
    assert list(vars(event)) == ["originator_id", "originator_version", "timestamp", *fields]
    assert (event.api_key, event.day, event.month) == (None, None, None)
    assert account.holds[REQUEST.hex].amount == 5 and account.available == 995


def test_an_unknown_or_missing_field_is_a_type_error_and_changes_nothing() -> None:
    account = funded()
    before = vars(account).copy()
    with pytest.raises(TypeError, match="no field 'colour'"):
        trigger(account, Account.HoldReleased, request_id=REQUEST, amount=1, reason="x", colour="red")
    with pytest.raises(TypeError, match="needs reason"):
        trigger(account, Account.HoldReleased, request_id=REQUEST, amount=1)
    assert vars(account) == before and account.pending_events == []


def test_the_event_is_applied_before_the_aggregate_takes_its_version_then_pending() -> None:
    account = funded()
    trigger(
        account, Account.CreditGranted, amount=7, reason="promo", idempotency_key=None, expires_at=NOW + timedelta(1)
    )
    (event,) = account.pending_events
    assert event.originator_version == account.version == 3
    assert list(account.lots) == [3]  # the grant's identity: the version its body saw plus one
    assert account.modified_on == event.timestamp and event.timestamp.tzinfo is not None
    assert account.balance == 1_007


def test_only_an_event_of_an_event_method_of_the_aggregate_is_triggered() -> None:
    account = funded()
    with pytest.raises(TypeError, match="no event of an @event method of Account"):
        trigger(account, MovementReceipt.Refunded, amount=1, refund_id="r")
    with pytest.raises(TypeError, match="no event of an @event method"):
        trigger(account, Account.Created, name="x")


def test_a_record_is_created_as_create_makes_it_and_needs_a_uuid() -> None:
    record = create(RequestRecord, RequestRecord.Failed, REQUEST, details={"outcome": "failed"})
    (event,) = record.pending_events
    assert type(event) is RequestRecord.Failed
    assert list(vars(event)) == ["originator_id", "originator_version", "timestamp", "originator_topic", "details"]
    assert (record.id, record.version, record.created_on, record.modified_on) == (
        REQUEST,
        1,
        event.timestamp,
        event.timestamp,
    )
    assert record.details.outcome == "failed" and record.attempts == []
    assert mapper().to_stored_event(event).topic == "domain.request_record:RequestRecord.Failed"
    with pytest.raises(TypeError, match="non-UUID"):
        create(RequestRecord, RequestRecord.Failed, REQUEST.hex, details={})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no created event"):
        create(RequestRecord, Account.Created, REQUEST, name="x")
