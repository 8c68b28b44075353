"""On a real SQLite store, a Ledger on the lean transcoder (the store's configured one,
adapters/settings.py) and a Ledger on eventsourcing's JSONTranscoder are interchangeable:
for the same commands the rows one writes are, byte for byte, the rows the other writes for
the same events; and each reads the other's rows to the same aggregates."""

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import JSONTranscoder, StoredEvent

from adapters.crypto.aes_gcm import AesGcmKeyVault
from adapters.crypto.key_digest import HmacApiKeyScheme
from adapters.persistence.lean_transcoder import LeanJSONTranscoder
from adapters.settings import parse_database_url
from application.accounts import Accounts
from application.ledger import Ledger
from domain.account import Account
from domain.request_record import RequestDetails, RequestRecord

DETAILS = {  # a real record's details (a plain request through `tallyhub serve`), floats included
    "outcome": "completed",
    "account_id": "c2022ec1bfe35242811dc3fda99f8f96",
    "api_key_id": "cc13b38a63f954e484ca5bac7b9f8188",
    "requested_model": "mock/mock-gpt",
    "model": "mock/mock-gpt",
    "provider": "mock",
    "upstream_model": "mock-gpt",
    "credential_id": "50d8f22fa0bc",
    "endpoint": "chat.completions",
    "stream": False,
    "status": 200,
    "error_code": None,
    "usage": {"input_tokens": 21, "cached_input_tokens": 0, "output_tokens": 20, "reasoning_tokens": 0, "images": 0},
    "charge": 61000,
    "cost": 61000,
    "uncollected": 0,
    "hold": 476000,
    "price_book_version": 1,
    "priced": True,
    "latency_ms": 8.564,
    "ttfb_ms": 1.5e-05,  # json writes 1.5e-05, orjson on its own 0.000015
    "started_at": "2026-12-07T23:21:10.459211+00:00",
    "provider_cost": None,
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[dict[str, str]]:
    yield parse_database_url(None, tmp_path).eventsourcing_env(create_tables=True)


def ledger_on(env: dict[str, str], master: bytes, *, lean: bool) -> Ledger:
    chosen = dict(env)
    if not lean:
        chosen.pop("TRANSCODER_TOPIC")
    return Ledger(chosen, vault=AesGcmKeyVault(master), key_scheme_factory=HmacApiKeyScheme)


def run_commands(ledger: Ledger) -> tuple[UUID, UUID]:
    """Create an account, place and settle holds (one of them with a key, both with windows), record a request."""
    account = Accounts(ledger).create_account(f"acct-{uuid4().hex[:6]}", starter_credits=10**12)
    now = datetime.now(UTC)
    request_ids = [uuid4(), uuid4()]
    for request_id, api_key in zip(request_ids, (uuid4(), None), strict=True):

        def hold(current: Account, request_id: UUID = request_id, api_key: UUID | None = api_key) -> list[object]:
            current.place_hold(request_id, 476000, now + timedelta(minutes=15), api_key_id=api_key, now=now)
            return []

        def settle(current: Account, request_id: UUID = request_id) -> list[object]:
            current.settle_hold(request_id, 61000)
            return []

        ledger.change_account(account.id, hold)  # type: ignore[arg-type]
        ledger.change_account(account.id, settle)  # type: ignore[arg-type]
    record = RequestRecord.completed(request_ids[0], RequestDetails.from_dict(DETAILS))
    ledger.save(record)
    return account.id, record.id


def rows(ledger: Ledger) -> list[StoredEvent]:
    return list(ledger.recorder.select_notifications(start=1, limit=10_000))


def test_the_configured_store_uses_the_lean_transcoder(store: dict[str, str]) -> None:
    ledger = ledger_on(store, os.urandom(32), lean=True)
    assert type(ledger.mapper.transcoder) is LeanJSONTranscoder
    assert type(ledger_on(store, os.urandom(32), lean=False).mapper.transcoder) is JSONTranscoder


@pytest.mark.parametrize("writer_is_lean", [True, False])
def test_either_writes_the_others_rows_and_reads_the_others_aggregates(
    store: dict[str, str], writer_is_lean: bool
) -> None:
    master = os.urandom(32)
    writer = ledger_on(store, master, lean=writer_is_lean)
    writer.initialise()
    reader = ledger_on(store, master, lean=not writer_is_lean)
    account_id, record_id = run_commands(writer)
    written = rows(writer)
    topics = {row.topic.rsplit(".", 1)[-1] for row in written}
    assert {"HoldPlaced", "HoldSettled", "Completed"} <= topics
    for row in written:
        event = writer.mapper.to_domain_event(row)
        # The other transcoder writes the same event to the same bytes, and reads it to an equal event.
        assert reader.mapper.to_stored_event(event).state == row.state
        assert reader.mapper.to_domain_event(row).__dict__ == event.__dict__
    reader_account: Account = reader.repository.get(account_id)
    writer_account: Account = writer.repository.get(account_id)
    assert (reader_account.version, reader_account.balance, reader_account.holds) == (
        writer_account.version,
        writer_account.balance,
        writer_account.holds,
    )
    assert reader.repository.get(record_id).details == writer.repository.get(record_id).details
    writer.close()
    reader.close()


def test_the_same_commands_write_the_same_rows_through_either(tmp_path: Path) -> None:
    """The same commands' events, saved by each on its own store: identical rows, state bytes included."""
    at = datetime(2026, 12, 7, 23, 21, 10, 511621, tzinfo=UTC)
    account = Account(name="pinned")
    account.grant_credits(10**12, "starter credits", idempotency_key="starter", now=at)
    account.place_hold(UUID(int=7), 476000, at + timedelta(minutes=15), api_key_id=UUID(int=9), now=at)
    account.settle_hold(UUID(int=7), 61000)
    record = RequestRecord.completed(UUID(int=7), RequestDetails.from_dict(DETAILS))
    events = [*account.collect_events(), *record.collect_events()]
    saved = []
    for name, lean in (("lean", True), ("standard", False)):
        (tmp_path / name).mkdir()
        env = parse_database_url(None, tmp_path / name).eventsourcing_env(create_tables=True)
        ledger = ledger_on(env, os.urandom(32), lean=lean)
        ledger.recorder.insert_events([ledger.mapper.to_stored_event(event) for event in events])
        saved.append([(row.topic, row.originator_id, row.originator_version, row.state) for row in rows(ledger)])
        ledger.close()
    assert len(saved[0]) == len(events) and saved[0] == saved[1]
