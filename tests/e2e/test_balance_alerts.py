"""``balance.low`` end to end under concurrency: 32 chat requests at once through an embedded
gateway take an account across its alert threshold, and the receiver on 127.0.0.1 gets
exactly one signed ``balance.low`` per downward crossing of the available balance — the
crossings counted independently, from the account as the ledger stored it after each of
its events (a request's worst-case hold is part of the available balance, so concurrent
holds may make it dip and recover more than once; each such crossing is one alert, never
more, and there is at least one)."""

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapters.bootstrap import build_ledger
from adapters.settings import Settings
from domain.money import format_credits
from tests.e2e.conftest import MODEL, UPSTREAM_KEY, configure
from tests.e2e.test_webhook_deliveries import wait_for
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import Gateway, cli
from tests.support.webhook_receiver import WebhookReceiver

SECRET = "whsec_e2e-balance-alerts-0042"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(secret=SECRET).start()
    yield receiver
    receiver.stop()


def chat(gateway: Gateway, key: str) -> int:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=BODY, headers={"authorization": f"Bearer {key}"}, timeout=60
    )
    assert response.status_code == 200, response.text
    return int(response.headers["x-tallyhub-charge-nanocredits"])


def crossings(data_dir: Path, account: str, threshold: int, after_version: int) -> list[int]:
    """The available balance after each of the account's events since ``after_version``,
    at the versions where it went from at or above ``threshold`` to below it."""
    ledger = build_ledger(Settings(data_dir=data_dir))
    try:
        account_id = ledger.get_account(account).id
        latest = ledger.get_account(account).version
        series = [ledger.repository.get(account_id, version=v).available for v in range(after_version, latest + 1)]
    finally:
        ledger.close()
    return [series[i] for i in range(1, len(series)) if series[i - 1] >= threshold > series[i]]


def test_32_concurrent_requests_yield_one_signed_balance_low_per_crossing(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    upstream = FakeOpenAIUpstream(api_key=UPSTREAM_KEY).start()
    gateway = Gateway.initialised(tmp_path / "data")
    try:
        key = configure(gateway, upstream, "acme", "1")
        cli(
            gateway.env,
            "webhooks",
            "add",
            receiver.url,
            "--events",
            "balance.low",
            "--secret-stdin",
            stdin=SECRET + "\n",
        )
        gateway.start()
        cost = chat(gateway, key)
        available = gateway.balance("acme")["available"]
        threshold = available - 16 * cost  # crossed about halfway through the burst
        assert threshold > 0 and cost > 0
        set_ = cli(gateway.env, "accounts", "alerts", "acme", "--below", format_credits(threshold))
        assert set_["below"] == [{"amount": format_credits(threshold), "amount_nanocredits": threshold}]
        ledger = build_ledger(Settings(data_dir=tmp_path / "data"))
        try:
            version_at_set = ledger.get_account("acme").version
        finally:
            ledger.close()

        start = threading.Barrier(32)
        charged: list[int] = []

        def one() -> None:
            start.wait()
            charged.append(chat(gateway, key))

        threads = [threading.Thread(target=one) for _ in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(charged) == 32

        expected = crossings(tmp_path / "data", "acme", threshold, version_at_set)
        assert expected, "the burst did not cross the threshold"
        wait_for(lambda: len(receiver.counts()) >= len(expected), "the balance.low deliveries")
        wait_for(
            lambda: all(
                row["lag"] == 0 for row in cli(gateway.env, "projections", "status")["data"] if row["name"] == "alerts"
            ),
            "the alert process caught up",
        )
        wait_for(
            lambda: {d["status"] for d in cli(gateway.env, "webhooks", "deliveries")["data"]} == {"delivered"},
            "every delivery logged as delivered",
        )
    finally:
        gateway.stop()
        upstream.stop()

    assert sorted(receiver.counts().values()) == [1] * len(expected)
    assert all(got.signature_valid for got in receiver.received)
    got = [item.json for item in receiver.received]
    assert {g["type"] for g in got} == {"balance.low"}
    assert {g["data"]["threshold_nanocredits"] for g in got} == {threshold}
    assert sorted(g["data"]["available_nanocredits"] for g in got) == sorted(expected)
