"""Retries of the same credential before failing over (application/failover.py,
failover_policy.py), through the HTTP app in process against fake upstream servers: a
retryable failure is retried after the wait the policy asks of the injected sleep (nothing
sleeps for real), each failed attempt is recorded on the request (``AttemptFailed``, with its
``retry`` number), and the request is charged once, for the attempt that served it. A caller
error is never retried, a ``Retry-After`` beyond the bound fails over instead of waiting, a
stream that has sent its first byte is never retried, and a provider that sends no headers
within its first-byte timeout is retried like any timeout."""

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from adapters.bootstrap import build_services, in_memory_ledger
from adapters.settings import Settings
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from domain.provider import UpstreamPolicy
from domain.request_record import FailedAttempt
from tests.fakes.clock import FakeClock
from tests.fakes.openai_scripts import Scripted
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import free_port
from tests.unit.test_key_http import auth, in_process_app

KEY_PRIMARY, KEY_BACKUP = "sk-primary-0000000000aaaa", "sk-backup-00000000000bbbb"
MESSAGES = [{"role": "user", "content": "hello"}]
PRIMARY_RATES = (10_000, 30_000)  # nanocredits per token: 10 and 30 credits per 1M
BACKUP_RATES = (1_000, 2_000)


class HighestJitter(random.Random):
    """Full jitter always drawing the top of its range, so a test can name the delay."""

    def uniform(self, a: float, b: float) -> float:
        return b


@dataclass
class Setup:
    client: TestClient
    ledger: Ledger
    primary: FakeOpenAIUpstream
    backup: FakeOpenAIUpstream
    key: str
    sleeps: list[float] = field(default_factory=list)

    def policy(self, **changes: Any) -> None:
        ProviderRegistry(self.ledger).set_policy("primary", **changes)

    def chat(self, model: str = "smart", **body: Any) -> httpx.Response:
        return self.client.post(
            "/v1/chat/completions", headers=auth(self.key), json={"model": model, "messages": MESSAGES, **body}
        )

    def available(self) -> int:
        return self.ledger.get_account("acme").available

    def attempts(self, response: httpx.Response) -> list[FailedAttempt]:
        return self.ledger.get_request_record(response.headers["x-request-id"]).attempts


@pytest.fixture
def setup() -> Iterator[Setup]:
    primary = FakeOpenAIUpstream(api_key=KEY_PRIMARY).start()
    backup = FakeOpenAIUpstream(api_key=KEY_BACKUP).start()
    ledger = in_memory_ledger(clock=FakeClock())
    ledger.initialise()
    services = build_services(Settings(), ledger=ledger)
    app = in_process_app(services)
    registry = ProviderRegistry(ledger)
    registry.register_provider(
        "primary",
        "openai-compatible",
        base_url=primary.base_url,
        region=None,
        secret=KEY_PRIMARY,
        policy=UpstreamPolicy(retries=2, retry_base_ms=100),
    )
    registry.register_provider("backup", "openai-compatible", base_url=backup.base_url, region=None, secret=KEY_BACKUP)
    prices = Prices(ledger)
    prices.set_price("primary/gpt-4o", price_from_credits(input="10", output="30"))
    prices.set_price("backup/gpt-4o-mini", price_from_credits(input="1", output="2"))
    prices.set_alias("smart", ["primary/gpt-4o", "backup/gpt-4o-mini"])
    Accounts(ledger).create_account("acme", starter_credits=10**12)
    key = ApiKeys(ledger).issue_api_key("acme").plaintext
    setup_ = Setup(TestClient(app), ledger, primary, backup, key)

    async def sleep(seconds: float) -> None:
        setup_.sleeps.append(seconds)

    services.calls.failover.sleep = sleep
    services.calls.failover.rng = HighestJitter()
    with setup_.client:
        yield setup_
    ledger.close()
    primary.stop()
    backup.stop()


def charge_of(response: httpx.Response, rates: tuple[int, int]) -> int:
    usage = response.json()["usage"]
    return usage["prompt_tokens"] * rates[0] + usage["completion_tokens"] * rates[1]


def test_a_503_then_a_200_is_retried_on_the_same_credential_after_the_backoff_and_charged_once(setup: Setup) -> None:
    setup.primary.script(Scripted.error(503, "overloaded"))
    before = setup.available()
    response = setup.chat()
    assert response.status_code == 200
    assert len(setup.primary.requests) == 2 and not setup.backup.requests
    assert setup.sleeps == [0.1]  # retry 0: the top of [0, min(cap, 100 ms · 2^0)]
    charge = charge_of(response, PRIMARY_RATES)
    assert int(response.headers["x-tallyhub-charge-nanocredits"]) == charge == before - setup.available()
    attempts = setup.attempts(response)
    assert [(a.provider, a.status, a.error_code, a.retry) for a in attempts] == [
        ("primary", 503, "upstream_unavailable", 0)
    ]
    assert "retry" not in attempts[0].to_dict()  # the first attempt's stored form is as before


def test_the_backoff_doubles_per_retry_and_retries_stop_at_the_configured_count(setup: Setup) -> None:
    setup.policy(retries=3)
    setup.primary.script(*[Scripted.error(502, "bad gateway")] * 4)
    before = setup.available()
    response = setup.chat(model="primary/gpt-4o")
    assert response.status_code == 502
    assert len(setup.primary.requests) == 4  # the first attempt and 3 retries
    assert setup.sleeps == [0.1, 0.2, 0.4]
    assert setup.available() == before  # nothing charged, the hold released
    record = setup.ledger.get_request_record(response.headers["x-request-id"])
    assert not record.succeeded
    # the last attempt's error is the request's own; those before it are recorded attempts
    assert [(a.status, a.retry) for a in record.attempts] == [(502, 0), (502, 1), (502, 2)]
    assert [a.to_dict().get("retry") for a in record.attempts] == [None, 1, 2]


def test_after_its_retries_the_next_target_serves_at_its_own_price(setup: Setup) -> None:
    setup.primary.script(*[Scripted.error(500, "boom")] * 3)
    before = setup.available()
    response = setup.chat()
    assert response.status_code == 200
    assert len(setup.primary.requests) == 3 and len(setup.backup.requests) == 1
    charge = charge_of(response, BACKUP_RATES)
    assert before - setup.available() == charge == int(response.headers["x-tallyhub-charge-nanocredits"])
    assert [(a.provider, a.retry) for a in setup.attempts(response)] == [("primary", 0), ("primary", 1), ("primary", 2)]


def test_a_400_is_never_retried(setup: Setup) -> None:
    setup.primary.script(Scripted.error(400, "This model's maximum context length is 8192 tokens"))
    before = setup.available()
    response = setup.chat()
    assert response.status_code == 400 and "maximum context length" in response.json()["error"]["message"]
    assert len(setup.primary.requests) == 1 and not setup.backup.requests
    assert setup.sleeps == [] and setup.available() == before


def test_a_429_waits_its_retry_after_then_retries(setup: Setup) -> None:
    setup.primary.script(Scripted.error(429, "slow down", retry_after=2))
    response = setup.chat()
    assert response.status_code == 200
    assert setup.sleeps == [2.0]  # the provider's word, not the backoff
    assert len(setup.primary.requests) == 2 and not setup.backup.requests
    assert [(a.status, a.error_code) for a in setup.attempts(response)] == [(429, "upstream_rate_limited")]


def test_a_retry_after_beyond_the_bound_fails_over_instead_of_waiting(setup: Setup) -> None:
    setup.primary.script(Scripted.error(429, "slow down", retry_after=31))
    response = setup.chat()
    assert response.status_code == 200
    assert setup.sleeps == []
    assert len(setup.primary.requests) == 1 and len(setup.backup.requests) == 1


def test_a_wait_past_the_requests_deadline_fails_over_instead(setup: Setup) -> None:
    setup.policy(timeout_total=1)  # the deadline: the request's arrival + 1 s
    setup.primary.script(Scripted.error(503, "busy", retry_after=2))
    response = setup.chat()
    assert response.status_code == 200
    assert setup.sleeps == [] and len(setup.primary.requests) == 1 and len(setup.backup.requests) == 1


def test_a_refused_credential_is_not_retried(setup: Setup) -> None:
    setup.primary.script(Scripted.error(401, "bad key"))
    response = setup.chat()
    assert response.status_code == 200
    assert setup.sleeps == [] and len(setup.primary.requests) == 1 and len(setup.backup.requests) == 1


def test_a_stream_that_has_sent_its_first_byte_is_never_retried(setup: Setup) -> None:
    setup.primary.script(Scripted.break_stream_after(2))
    with setup.client.stream(
        "POST",
        "/v1/chat/completions",
        headers=auth(setup.key),
        json={"model": "smart", "messages": MESSAGES, "stream": True},
    ) as response:
        assert response.status_code == 200
        body = b"".join(response.iter_bytes())
    assert b"data:" in body and b"error" in body  # what was relayed, then the break
    assert len(setup.primary.requests) == 1 and not setup.backup.requests
    assert setup.sleeps == []


def test_a_stream_is_retried_before_its_first_byte(setup: Setup) -> None:
    setup.primary.script(Scripted.error(503, "busy"))
    with setup.client.stream(
        "POST",
        "/v1/chat/completions",
        headers=auth(setup.key),
        json={"model": "smart", "messages": MESSAGES, "stream": True},
    ) as response:
        assert response.status_code == 200
        body = b"".join(response.iter_bytes())
    assert body.rstrip().endswith(b"data: [DONE]")
    assert len(setup.primary.requests) == 2 and setup.sleeps == [0.1]


def test_no_headers_within_the_first_byte_timeout_is_a_timeout_retried_and_recorded(setup: Setup) -> None:
    setup.policy(timeout_first_byte=0.3, retries=1)
    setup.primary.script(Scripted.delay(2.0))  # headers 2 s late: the attempt gives up at 0.3 s
    response = setup.chat()
    assert response.status_code == 200
    assert len(setup.primary.requests) == 2 and not setup.backup.requests
    assert setup.primary.requests[0].disconnected  # the gateway hung up on the late one
    assert [(a.status, a.error_code, a.retry) for a in setup.attempts(response)] == [(504, "upstream_timeout", 0)]
    assert len(setup.sleeps) == 1


def test_a_connect_error_is_retried_then_failed_over(setup: Setup) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: the connection is refused
    ProviderRegistry(setup.ledger).register_provider(
        "dead", "openai-compatible", base_url=closed, region=None, secret=KEY_PRIMARY, policy=UpstreamPolicy(retries=1)
    )
    Prices(setup.ledger).set_price("dead/gpt-4o", price_from_credits(input="10", output="30"))
    Prices(setup.ledger).set_alias("dead-first", ["dead/gpt-4o", "backup/gpt-4o-mini"])
    response = setup.chat(model="dead-first")
    assert response.status_code == 200 and len(setup.backup.requests) == 1
    assert [(a.provider, a.status, a.error_code, a.retry) for a in setup.attempts(response)] == [
        ("dead", 502, "upstream_unavailable", 0),
        ("dead", 502, "upstream_unavailable", 1),
    ]
    assert len(setup.sleeps) == 1 and 0 <= setup.sleeps[0] <= 0.25
