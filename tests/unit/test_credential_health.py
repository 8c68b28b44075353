"""Cooldowns that match what happened: no single failure cools a credential, a failure
rate does (longer on repeated trips), a 429 cools for the provider's Retry-After, and
when everything cools the caller hears 503 ``upstream_unavailable`` — 429 only when the
provider said 429 — with the wait until the soonest cooldown ends."""

import random
from datetime import UTC, datetime

import pytest

from application.failover_policy import learn, retry_after_seconds
from application.health import FAILING, RATE_LIMITED, CredentialHealth, HealthPolicy
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from application.routing import Router, Target
from domain.errors import UpstreamError


class Ticks:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def server_error() -> UpstreamError:
    return UpstreamError("provider 'openai' failed with status 500", status=502, code="upstream_error")


def timeout() -> UpstreamError:
    return UpstreamError("provider 'openai' timed out", status=504, code="upstream_timeout")


def rate_limit(retry_after: str | None = "12") -> UpstreamError:
    return UpstreamError("slow down", status=429, code="upstream_rate_limited", retry_after=retry_after)


@pytest.fixture
def ticks() -> Ticks:
    return Ticks()


@pytest.fixture
def health(ticks: Ticks) -> CredentialHealth:
    return CredentialHealth(clock=ticks)


@pytest.fixture
def router(ledger: Ledger, health: CredentialHealth) -> Router:
    return Router(ledger, health, rng=random.Random(3))


def target(ledger: Ledger, router: Router, model: str) -> Target:
    return router.targets(model, ledger.price_book().latest)[0]


@pytest.fixture
def single(ledger: Ledger) -> None:
    ProviderRegistry(ledger).register_provider("openai", "openai", base_url=None, region=None, secret="sk-openai-aaaa")
    Prices(ledger).set_price("openai/gpt-4o", price_from_credits(input="2.5", output="10"))


@pytest.fixture
def double(ledger: Ledger) -> None:
    ProviderRegistry(ledger).register_provider("openai", "openai", base_url=None, region=None, secret="sk-openai-aaaa")
    ProviderRegistry(ledger).add_credential("openai", "sk-openai-bbbb")
    Prices(ledger).set_price("openai/gpt-4o", price_from_credits(input="2.5", output="10"))


def only_credential(ledger: Ledger, router: Router) -> str:
    (route,) = router.routes(target(ledger, router, "openai/gpt-4o"))
    return route.credential_id


def test_a_single_5xx_or_timeout_does_not_cool_the_only_credential(
    ledger: Ledger, router: Router, health: CredentialHealth, single: None
) -> None:
    credential = only_credential(ledger, router)
    learn(health, credential, server_error())
    assert health.cooldown(credential) is None
    assert [r.credential_id for r in router.routes(target(ledger, router, "openai/gpt-4o"))] == [credential]
    learn(health, credential, None)
    learn(health, credential, timeout())  # two failures in three attempts: still below the burst
    assert health.cooldown(credential) is None


def test_a_burst_of_failures_cools_the_credential_and_the_caller_hears_503_with_retry_after(
    ledger: Ledger, router: Router, health: CredentialHealth, ticks: Ticks, single: None
) -> None:
    credential = only_credential(ledger, router)
    for error in (server_error(), timeout(), server_error()):
        learn(health, credential, error)
    assert health.cooldown(credential).reason == FAILING
    openai = target(ledger, router, "openai/gpt-4o")
    assert list(router.routes(openai)) == []
    error = router.unavailable([openai])
    assert (error.status, error.code, error.retry_after) == (503, "upstream_unavailable", "5")
    ticks.now += 3.2
    assert router.unavailable([openai]).retry_after == "2"  # the seconds left, rounded up
    ticks.now += 1.8
    assert [r.credential_id for r in router.routes(openai)] == [credential]  # over: tried again


def test_failures_below_the_rate_do_not_cool(
    ledger: Ledger, router: Router, health: CredentialHealth, single: None
) -> None:
    credential = only_credential(ledger, router)
    for _ in range(8):
        learn(health, credential, None)
    for _ in range(4):  # 4 failures in 12 attempts: a third
        learn(health, credential, server_error())
    assert health.cooldown(credential) is None
    for _ in range(4):  # 8 in 16: half
        learn(health, credential, server_error())
    assert health.cooldown(credential) is not None


def test_failures_older_than_the_window_are_forgotten(health: CredentialHealth, ticks: Ticks) -> None:
    for _ in range(2):
        health.record_failure("cred")
    ticks.now += HealthPolicy().window_seconds + HealthPolicy().bucket_seconds
    health.record_failure("cred")
    assert health.cooldown("cred") is None
    health.record_failure("cred")
    health.record_failure("cred")
    assert health.cooldown("cred") is not None


def test_the_cooldown_grows_on_repeated_trips_and_starts_over_after_a_success(
    health: CredentialHealth, ticks: Ticks
) -> None:
    def trip() -> float:
        for _ in range(3):
            health.record_failure("cred")
        seconds = health.cooling_for("cred")
        ticks.now += seconds
        return seconds

    assert [trip() for _ in range(6)] == [5, 10, 20, 40, 60, 60]  # doubled, at most a minute
    health.record_success("cred")
    assert trip() == 5


def test_with_two_credentials_the_failing_one_is_left_out_and_the_other_serves(
    ledger: Ledger, router: Router, health: CredentialHealth, double: None
) -> None:
    openai = target(ledger, router, "openai/gpt-4o")
    failing, healthy = sorted(r.credential_id for r in router.routes(openai))
    for _ in range(3):
        learn(health, failing, server_error())
    for _ in range(20):
        assert [r.credential_id for r in router.routes(openai)] == [healthy]


def test_when_every_credential_cools_after_a_429_the_caller_hears_429(
    ledger: Ledger, router: Router, health: CredentialHealth, double: None
) -> None:
    openai = target(ledger, router, "openai/gpt-4o")
    first, second = sorted(r.credential_id for r in router.routes(openai))
    learn(health, first, rate_limit("12"))
    learn(health, second, rate_limit("7"))
    assert health.cooldown(first).reason == RATE_LIMITED
    error = router.unavailable([openai])
    assert (error.status, error.code, error.retry_after) == (429, "upstream_rate_limited", "7")


def test_when_some_cool_after_failures_and_others_after_429_the_caller_hears_503(
    ledger: Ledger, router: Router, health: CredentialHealth, double: None
) -> None:
    openai = target(ledger, router, "openai/gpt-4o")
    first, second = sorted(r.credential_id for r in router.routes(openai))
    learn(health, first, rate_limit("30"))
    for _ in range(3):
        learn(health, second, server_error())
    error = router.unavailable([openai])
    assert (error.status, error.code, error.retry_after) == (503, "upstream_unavailable", "5")


def test_what_each_outcome_teaches(health: CredentialHealth) -> None:
    refused = UpstreamError("refused", status=502, code="upstream_auth_failed")
    assert learn(health, "cred", refused) == "refused by the provider (502)"  # disabled through the ledger
    assert health.cooldown("cred") is None
    caller_fault = UpstreamError("context too long", status=400, code="upstream_rejected_request")
    for _ in range(5):
        learn(health, "cred", caller_fault)  # the provider answered: the credential works
    for _ in range(3):
        learn(health, "cred", server_error())
    assert health.cooldown("cred") is None  # 3 failures in 8 attempts
    assert learn(health, None, server_error()) is None  # no credential (Ollama): nothing to learn


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("12", 12),
        (None, 30),
        ("soon", 30),
        ("nan", 30),
        ("inf", 30),
        ("1e308", 600),
        ("-5", 1),
        ("0", 1),
        ("Sun, 06 Dec 2026 12:00:40 GMT", 40),
    ],
)
def test_a_429_cools_for_the_providers_retry_after_within_reason(header: str | None, seconds: float) -> None:
    now = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)
    read = retry_after_seconds(header, now) if header and "GMT" in header else retry_after_seconds(header)
    assert HealthPolicy().rate_limit_cooldown(read) == seconds


def test_credentials_neither_cooling_nor_counted_lately_are_forgotten_past_the_limit(
    health: CredentialHealth, ticks: Ticks, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("application.health.TRACKED_CREDENTIALS", 3)
    health.rate_limited("limited", 600)
    health.record_success("idle")
    ticks.now += HealthPolicy().window_seconds + HealthPolicy().bucket_seconds
    health.record_success("busy")
    health.apply("heard-of", 30, FAILING)  # the fourth: the idle one goes
    assert set(health._states) == {"limited", "busy", "heard-of"}
    assert health.cooldown("limited").reason == RATE_LIMITED
