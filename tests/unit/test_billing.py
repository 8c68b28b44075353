import threading
from uuid import uuid4

import pytest

from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.billing import RequestBilling, RequestShape
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from domain.errors import AuthenticationFailed, InsufficientCredits, ModelNotFound
from domain.pricing import price_usage, worst_case_usage
from domain.usage import Usage
from tests.fakes.clock import FakeClock
from tests.support.routes import first_route

MODEL = "openai/gpt-test"


def shape(prompt_bytes: int = 200, max_tokens: int | None = 100) -> RequestShape:
    return RequestShape(model=MODEL, prompt_bytes=prompt_bytes, max_output_tokens=max_tokens, choices=1, stream=False)


@pytest.fixture
def key(ledger: Ledger) -> str:
    ProviderRegistry(ledger).register_provider(
        "openai", "openai", base_url="http://127.0.0.1:9/v1", region=None, secret="sk-test-secret-0001"
    )
    Prices(ledger).set_price(MODEL, price_from_credits(input="2", output="8"))
    Accounts(ledger).create_account("acme")
    return ApiKeys(ledger).issue_api_key("acme").plaintext


def worst_case(ledger: Ledger, s: RequestShape) -> int:
    price = ledger.price_book().latest.price_for(MODEL)
    return price_usage(price, worst_case_usage(s.prompt_bytes, s.max_output_tokens, s.choices, price))


def test_a_completed_request_is_charged_exactly_its_usage(
    ledger: Ledger, credits_billing: RequestBilling, key: str
) -> None:
    Accounts(ledger).grant_credits("acme", 10**9)
    opened = credits_billing.open_request(key, shape())
    assert ledger.get_account("acme").held == opened.hold == worst_case(ledger, shape())
    receipt = credits_billing.complete_request(
        opened, first_route(credits_billing, opened), Usage(input_tokens=120, output_tokens=30)
    )
    assert receipt.charge == 120 * 2_000 + 30 * 8_000  # rates are 2 and 8 credits per 1M tokens
    account = ledger.get_account("acme")
    assert (account.balance, account.held) == (10**9 - receipt.charge, 0)
    assert receipt.price_book_version == 1


def test_completing_twice_charges_once(ledger: Ledger, credits_billing: RequestBilling, key: str) -> None:
    Accounts(ledger).grant_credits("acme", 10**9)
    opened = credits_billing.open_request(key, shape())
    first = credits_billing.complete_request(
        opened, first_route(credits_billing, opened), Usage(input_tokens=10, output_tokens=10)
    )
    second = credits_billing.complete_request(
        opened, first_route(credits_billing, opened), Usage(input_tokens=999, output_tokens=999)
    )
    assert second.charge == first.charge
    assert ledger.get_account("acme").balance == 10**9 - first.charge


def test_a_failed_request_releases_its_hold_and_charges_nothing(
    ledger: Ledger, credits_billing: RequestBilling, key: str
) -> None:
    Accounts(ledger).grant_credits("acme", 10**9)
    opened = credits_billing.open_request(key, shape())
    credits_billing.fail_request(opened, status=502, error_code="upstream_error")
    account = ledger.get_account("acme")
    assert (account.balance, account.held) == (10**9, 0)
    assert ledger.find(opened.request_id).details.outcome == "failed"


def test_a_request_the_account_cannot_cover_is_refused_before_any_call(
    ledger: Ledger, credits_billing: RequestBilling, key: str
) -> None:
    Accounts(ledger).grant_credits("acme", worst_case(ledger, shape()) - 1)
    with pytest.raises(InsufficientCredits):
        credits_billing.open_request(key, shape())
    assert ledger.get_account("acme").held == 0


def test_an_unpriced_model_is_refused_in_credits_mode(
    ledger: Ledger, credits_billing: RequestBilling, key: str
) -> None:
    Accounts(ledger).grant_credits("acme", 10**9)
    with pytest.raises(ModelNotFound):
        credits_billing.open_request(key, RequestShape("openai/unpriced", 10, 10, 1, False))


def test_track_mode_prices_without_holds_and_flags_unpriced_models(
    ledger: Ledger, track_billing: RequestBilling, key: str
) -> None:
    opened = track_billing.open_request(key, shape())
    assert opened.hold == 0
    receipt = track_billing.complete_request(
        opened, first_route(track_billing, opened), Usage(input_tokens=1_000, output_tokens=0)
    )
    assert (receipt.charge, receipt.priced) == (2_000_000, True)
    unpriced = track_billing.open_request(key, RequestShape("openai/unpriced", 10, 10, 1, False))
    receipt = track_billing.complete_request(unpriced, first_route(track_billing, unpriced), Usage(input_tokens=1_000))
    assert (receipt.charge, receipt.priced) == (0, False)
    assert ledger.find(unpriced.request_id).details.priced is False


def test_unknown_provider_or_malformed_model_is_model_not_found(credits_billing: RequestBilling, key: str) -> None:
    for model in ("nobody/gpt", "no-slash", "/x", "openai/"):
        with pytest.raises(ModelNotFound):
            credits_billing.open_request(key, RequestShape(model, 10, 10, 1, False))


def test_a_bad_key_is_refused(credits_billing: RequestBilling, key: str) -> None:
    with pytest.raises(AuthenticationFailed):
        credits_billing.open_request("thk_not-a-key", shape())


def test_a_hold_that_expired_is_still_charged_once_within_what_is_available(
    ledger: Ledger, credits_billing: RequestBilling, key: str, clock: FakeClock
) -> None:
    Accounts(ledger).grant_credits("acme", 10**9)
    opened = credits_billing.open_request(key, shape())
    account = ledger.get_account("acme")
    clock.advance(hours=1)
    for request_id in account.expired_holds(clock.now()):
        account.release_hold(request_id, reason="expired")
    ledger.save(account)
    receipt = credits_billing.complete_request(
        opened, first_route(credits_billing, opened), Usage(input_tokens=10, output_tokens=10)
    )
    assert ledger.get_account("acme").balance == 10**9 - receipt.charge


@pytest.mark.parametrize("mode", ["credits", "track"])
def test_a_request_is_recorded_with_what_its_settlement_charged_and_what_it_left_uncollected(
    ledger: Ledger,
    credits_billing: RequestBilling,
    track_billing: RequestBilling,
    key: str,
    clock: FakeClock,
    mode: str,
) -> None:
    billing = credits_billing if mode == "credits" else track_billing
    Accounts(ledger).grant_credits("acme", worst_case(ledger, shape()))
    opened = billing.open_request(key, shape())
    usage = Usage(input_tokens=120, output_tokens=30)
    cost = 120 * 2_000 + 30 * 8_000
    charged = cost
    if mode == "credits":  # its hold expires, and another request holds most of the credit meanwhile
        account = ledger.get_account("acme")
        clock.advance(hours=1)
        for request_id in account.expired_holds(clock.now()):
            account.release_hold(request_id, reason="expired")
        ledger.save(account)
        billing.open_request(key, shape(prompt_bytes=150))
        charged = ledger.get_account("acme").available
        assert 0 < charged < cost
    receipt = billing.complete_request(opened, first_route(billing, opened), usage)
    assert (receipt.charge, receipt.uncollected, receipt.cost) == (charged, cost - charged, cost)
    (stored, *_) = ledger.events.get(opened.request_id)  # the stored form, not the record kept in memory
    recorded = (stored.details["charge"], stored.details["uncollected"], stored.details["cost"])
    assert recorded == (charged, cost - charged, cost)
    assert ledger.find(opened.request_id).details.uncollected == cost - charged


def test_concurrent_requests_never_overdraw_the_account(
    ledger: Ledger, credits_billing: RequestBilling, key: str
) -> None:
    Accounts(ledger).grant_credits("acme", 10 * worst_case(ledger, shape()))
    outcomes: list[str] = []
    barrier = threading.Barrier(50)

    def call() -> None:
        barrier.wait()
        try:
            opened = credits_billing.open_request(key, shape(), request_id=uuid4())
        except InsufficientCredits:
            outcomes.append("402")
            return
        worst = Usage(input_tokens=200, cache_write_1h_tokens=200, output_tokens=100)  # the hold's own usage
        credits_billing.complete_request(opened, first_route(credits_billing, opened), worst)
        outcomes.append("200")

    threads = [threading.Thread(target=call) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("200") == 10 and outcomes.count("402") == 40
    account = ledger.get_account("acme")
    assert account.balance == 0 and account.held == 0


def test_an_account_day_cap_refuses_holds_that_would_pass_it_until_the_day_turns(
    ledger: Ledger, credits_billing: RequestBilling, key: str, clock: FakeClock
) -> None:
    from domain.spend_caps import SpendCapReached

    Accounts(ledger).grant_credits("acme", 10**12)
    worst = worst_case(ledger, shape())
    Accounts(ledger).set_spend_caps("acme", day=2 * worst, month=None)
    for _ in range(2):
        opened = credits_billing.open_request(key, shape())
        credits_billing.complete_request(
            opened, first_route(credits_billing, opened), Usage(input_tokens=200, output_tokens=100)
        )
    with pytest.raises(SpendCapReached) as reached:
        credits_billing.open_request(key, shape())
    assert reached.value.window == "day" and 0 < reached.value.retry_after_seconds <= 86_400
    clock.advance(days=1)
    credits_billing.open_request(key, shape())  # a new day, a fresh cap


def test_a_key_month_cap_counts_holds_and_spares_other_keys(
    ledger: Ledger, credits_billing: RequestBilling, key: str
) -> None:
    from domain.spend_caps import SpendCapReached

    Accounts(ledger).grant_credits("acme", 10**12)
    worst = worst_case(ledger, shape())
    capped = ledger.authenticate(key).id
    Accounts(ledger).set_spend_caps("acme", day=None, month=worst, api_key_id=capped)
    credits_billing.open_request(key, shape())  # held, not yet charged: it counts
    with pytest.raises(SpendCapReached):
        credits_billing.open_request(key, shape())
    other = ApiKeys(ledger).issue_api_key("acme").plaintext
    credits_billing.open_request(other, shape())


def test_an_opened_request_copied_with_one_field_keeps_every_other_and_leaves_the_original(
    ledger: Ledger, credits_billing: RequestBilling, key: str
) -> None:
    import asyncio
    import dataclasses

    opened = credits_billing.prepare_request(key, shape())
    durable: asyncio.Future[bool] = asyncio.new_event_loop().create_future()
    admitted = object()
    held = opened.with_hold_durable(durable)
    limited = held.with_rate_limit(admitted)  # type: ignore[arg-type]  # any value: only copied
    for field in dataclasses.fields(opened):
        if field.name not in ("hold_durable", "rate_limit"):
            assert getattr(limited, field.name) == getattr(opened, field.name), field.name
    assert (limited.hold_durable, limited.rate_limit) == (durable, admitted)
    assert (opened.hold_durable, opened.rate_limit, held.rate_limit) == (None, None, None)
    assert type(limited) is type(opened) and opened.hold == worst_case(ledger, shape()) > 0
