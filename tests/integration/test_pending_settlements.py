"""A stream's settlement the store failed (docs/reliability.md, finding 4), through the whole
gateway in process on the real SQLite store and the fake OpenAI upstream: the store refuses
the settlement's save (an injected ``database or disk is full`` from the recorder, the error
the SQLite recorder raises for a full disk), the stream ends without its usage chunk, and the
settlement kept pending lands once the store takes it: charged once, to the nanocredit.
When the store is still away as the app stops, the pending settlement gets the shutdown's
grace, then is given up and logged; its hold stays for the hold sweep, nothing charged."""

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import pytest
from eventsourcing.persistence import OperationalError, StoredEvent
from fastapi.testclient import TestClient

from adapters.bootstrap import build_services, initialise
from adapters.services import Services
from adapters.settings import Settings
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from domain.account import Account
from domain.pricing import price_usage
from domain.usage import Usage
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.unit.test_key_http import auth, in_process_app

SECRET = "sk-pending-settlement-provider-1234"
CHAT = "openai/gpt-4o-mini"
GRANT = 10**12
BODY = {
    "model": CHAT,
    "messages": [{"role": "user", "content": "hi"}],
    "stream": True,
    "stream_options": {"include_usage": True},
    "max_tokens": 50,
}


class FullDisk:
    """The SQLite recorder refusing the saves that settle a hold, as a full disk does."""

    def __init__(self, insert: Callable[..., Any]) -> None:
        self._insert = insert
        self.refuse = 0
        self.always = False
        self.refused = 0

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Any:
        if any(event.topic.endswith(".HoldSettled") for event in stored_events) and (self.always or self.refuse):
            self.refuse = max(self.refuse - 1, 0)
            self.refused += 1
            raise OperationalError("database or disk is full")
        return self._insert(stored_events, **kwargs)


@dataclass
class Gateway:
    services: Services
    upstream: FakeOpenAIUpstream
    disk: FullDisk
    key: str
    account_id: UUID

    def stream(self, client: TestClient) -> tuple[str, list[bytes]]:
        """One stream, read to its end; its request id and frames."""
        with client.stream("POST", "/v1/chat/completions", headers=auth(self.key), json=BODY) as response:
            assert response.status_code == 200
            frames = [line for line in response.iter_lines() if line]
            return response.headers["x-request-id"], [frame.encode() for frame in frames]

    def account(self) -> tuple[int, int]:
        account = self.services.ledger.get_account(self.account_id)
        return account.balance, account.held

    def settlements(self, request_id: str) -> list[int]:
        return [
            event.amount
            for event in self.services.ledger.events.get(self.account_id)
            if isinstance(event, Account.HoldSettled) and UUID(str(event.request_id)) == UUID(request_id)
        ]

    def expected_charge(self, usage: Usage) -> int:
        price = self.services.ledger.price_book().latest.price_for(CHAT)
        assert price is not None
        return price_usage(price, usage)


def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grace: float) -> Iterator[Gateway]:
    upstream = FakeOpenAIUpstream(api_key=SECRET).start()
    settings = Settings(data_dir=tmp_path / "data", shutdown_grace_seconds=grace)  # initialise makes the key
    initialise(settings)
    services = build_services(settings)
    ledger = services.ledger
    ProviderRegistry(ledger).register_provider(
        "openai", "openai", base_url=upstream.base_url, region=None, secret=SECRET
    )
    Prices(ledger).set_price(CHAT, price_from_credits(input="2", output="8"))
    account_id = Accounts(ledger).create_account("acme", starter_credits=GRANT).id
    key = ApiKeys(ledger).issue_api_key("acme").plaintext
    disk = FullDisk(ledger.recorder.insert_events)
    monkeypatch.setattr(ledger.recorder, "insert_events", disk.insert_events)
    monkeypatch.setattr(services.pending_settlements, "first_wait", 0.02)
    monkeypatch.setattr(services.pending_settlements, "max_wait", 0.1)
    try:
        yield Gateway(services, upstream, disk, key, account_id)
    finally:
        services.close()
        upstream.stop()


@pytest.fixture
def sqlite_gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    yield from gateway(tmp_path, monkeypatch, grace=30.0)


@pytest.fixture
def stopping_gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    yield from gateway(tmp_path, monkeypatch, grace=0.3)


def usage_of(frames: list[bytes]) -> Usage | None:
    for frame in frames:
        payload = frame.removeprefix(b"data: ")
        if payload != b"[DONE]" and (usage := orjson.loads(payload).get("usage")):
            return Usage(input_tokens=usage["prompt_tokens"], output_tokens=usage["completion_tokens"])
    return None


def poll(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    give_up = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < give_up, "the condition never held"
        time.sleep(0.02)


def test_a_streams_settlement_refused_by_a_full_disk_lands_once_the_store_takes_it_charged_once(
    sqlite_gateway: Gateway,
) -> None:
    gw = sqlite_gateway
    app = in_process_app(gw.services)
    with TestClient(app) as client:
        _, healthy = gw.stream(client)  # the same stream with the store well: its usage, its charge
        usage = usage_of(healthy)
        assert usage is not None
        gw.disk.refuse = 3
        before = gw.account()
        with pytest.raises(OperationalError):
            gw.stream(client)
        (request_id,) = gw.services.ledger.get_account(gw.account_id).holds  # the stream's, still held
        poll(lambda: gw.services.pending_settlements.pending == 0)
    charge = gw.expected_charge(usage)
    assert gw.disk.refused == 3 and gw.services.pending_settlements.landed == 1
    assert gw.settlements(request_id) == [charge]
    assert gw.account() == (before[0] - charge, 0)
    assert gw.services.ledger.get_request_record(request_id).details.charge == charge


def test_a_settlement_still_refused_when_the_app_stops_gets_the_grace_then_is_given_up_and_logged(
    stopping_gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tallyhub.billing")
    gw = stopping_gateway
    app = in_process_app(gw.services)
    with TestClient(app) as client:
        gw.disk.always = True
        with pytest.raises(OperationalError):
            gw.stream(client)
        (hold,) = gw.services.ledger.get_account(gw.account_id).holds
        assert gw.services.pending_settlements.pending == 1
    # the lifespan's end gave it the grace (0.3 s), then gave it up
    assert gw.services.pending_settlements.pending == 0 and gw.services.pending_settlements.given_up == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(str(UUID(hold)) in message and "nanocredits" in message for message in errors), errors
    assert gw.settlements(hold) == [] and gw.account()[0] == GRANT  # nothing charged; the hold left to the sweep
