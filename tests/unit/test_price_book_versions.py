"""A loaded price book hands out one object per version, and a version parses a model's
price once (domain/price_book.py): every lookup in the same version returns the same
``ModelPrice``, while a version published later — by this process or, once its read cache
has aged, by another — is seen with its own prices, scheduled versions take effect only
at their time, and unpriced models stay unpriced."""

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.bootstrap import build_ledger, in_memory_ledger, initialise
from adapters.http.errors import status_of
from adapters.settings import Settings
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.billing import RequestBilling, RequestShape
from application.health import CredentialHealth
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from application.routing import Router
from domain.price_book import PriceBook, PriceBookVersion
from domain.pricing import InvalidPrice, ModelPrice
from tests.fakes.clock import FakeClock

MODEL = "openai/gpt-4o"
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
ONE = price_from_credits(input="1", output="2")
TWO = price_from_credits(input="3", output="4")


def register_openai(ledger: Ledger) -> None:
    ProviderRegistry(ledger).register_provider("openai", "openai", base_url=None, region=None, secret="sk-openai-aa")


def test_lookups_in_one_version_return_one_price_object_equal_to_the_stored_one() -> None:
    book = PriceBook()
    book.publish_version({MODEL: ONE}, NOW, now=NOW)
    version = book.effective(NOW)
    assert version is book.latest and version is book.effective(NOW + timedelta(days=1))
    first = version.price_for(MODEL)
    assert first is version.price_for(MODEL) and first is book.effective(NOW).price_for(MODEL)
    assert first == ONE == ModelPrice.from_dict(version.prices[MODEL])


def test_a_newer_version_is_a_new_object_with_its_own_prices_and_the_older_one_keeps_its_own() -> None:
    book = PriceBook()
    book.publish_version({MODEL: ONE}, NOW, now=NOW)
    old = book.latest
    old_price = old.price_for(MODEL)
    book.set_price(MODEL, TWO, now=NOW + timedelta(minutes=1))
    new = book.effective(NOW + timedelta(minutes=1))
    assert (new.number, old.number) == (2, 1) and new is not old
    assert new.price_for(MODEL) == TWO and old.price_for(MODEL) is old_price and old_price == ONE


def test_a_scheduled_version_takes_effect_only_at_its_time() -> None:
    book = PriceBook()
    book.publish_version({MODEL: ONE}, NOW, now=NOW)
    later = NOW + timedelta(hours=1)
    book.publish_version({MODEL: TWO}, later, now=NOW)
    before, at = book.effective(later - timedelta(microseconds=1)), book.effective(later)
    assert (before.number, at.number, book.latest.number) == (1, 2, 2) and at is book.latest
    assert before.price_for(MODEL) == ONE and at.price_for(MODEL) == TWO
    assert before is book.effective(NOW)


def test_unpriced_models_and_an_empty_book_price_nothing() -> None:
    book = PriceBook()
    assert (book.latest.number, book.effective(NOW).number, book.latest.price_for(MODEL)) == (0, 0, None)
    book.publish_version({MODEL: ONE}, NOW, now=NOW)
    assert book.latest.price_for("openai/unpriced") is None
    assert book.latest.price_for("openai/unpriced") is None  # a miss is not kept as a price
    assert book.effective(NOW - timedelta(seconds=1)).number == 0


def test_a_stored_price_that_cannot_be_parsed_fails_only_its_own_lookups_every_time() -> None:
    version = PriceBookVersion(1, NOW, {"a/bad": {"input": -1, "output": 1}, "a/good": ONE.to_dict()})
    assert version.price_for("a/good") == ONE
    for _ in range(2):
        with pytest.raises(InvalidPrice):
            version.price_for("a/bad")


def test_versions_compare_by_what_they_hold_not_by_what_they_parsed() -> None:
    parsed, fresh = PriceBookVersion(1, NOW, {MODEL: ONE.to_dict()}), PriceBookVersion(1, NOW, {MODEL: ONE.to_dict()})
    parsed.price_for(MODEL)
    assert parsed == fresh and repr(parsed) == repr(fresh)


def test_a_recorded_book_loads_with_the_same_versions_and_prices() -> None:
    ledger = in_memory_ledger(clock=FakeClock(NOW))
    ledger.initialise()
    try:
        register_openai(ledger)
        Prices(ledger).set_price(MODEL, ONE)
        Prices(ledger).publish_prices({MODEL: TWO}, effective_at=NOW + timedelta(hours=1))
        book = ledger.price_book()
        assert [v["version"] for v in book.versions] == [1, 2]  # the audit tools' recorded form
        assert book.effective(NOW).price_for(MODEL) == ONE
        assert book.effective(NOW + timedelta(hours=1)).price_for(MODEL) == TWO
    finally:
        ledger.close()


@pytest.fixture
def hot_path() -> Iterator[tuple[Ledger, RequestBilling, str]]:
    """A ledger whose read cache keeps reads for an hour, as a busy gateway's would."""
    ledger = in_memory_ledger(clock=FakeClock(NOW), read_cache_seconds=3600)
    ledger.initialise()
    register_openai(ledger)
    Prices(ledger).set_price(MODEL, ONE)
    Accounts(ledger).create_account("acme", starter_credits=10**12)
    key = ApiKeys(ledger).issue_api_key("acme").plaintext
    billing = RequestBilling(
        ledger, Router(ledger, CredentialHealth()), mode="credits", hold_ttl=timedelta(minutes=5), status_of=status_of
    )
    yield ledger, billing, key
    ledger.close()


SHAPE = RequestShape(MODEL, prompt_bytes=200, max_output_tokens=50, choices=1, stream=False)


def test_requests_priced_by_one_version_share_its_price_and_this_process_sees_its_new_version_at_once(
    hot_path: tuple[Ledger, RequestBilling, str],
) -> None:
    ledger, billing, key = hot_path
    first, second = billing.prepare_request(key, SHAPE), billing.prepare_request(key, SHAPE)
    assert first.targets[0].price is second.targets[0].price and first.targets[0].price == ONE
    # the hold: 200 prompt tokens as 1-hour cache writes (2 × input, the dearest class) and
    # 50 output tokens; 1 credit per 1M tokens is 1,000 nanocredits a token
    assert first.hold == second.hold == 200 * 2 * 1_000 + 50 * 2_000

    assert Prices(ledger).set_price(MODEL, TWO) == 2
    third = billing.prepare_request(key, SHAPE)
    assert (third.price_book_version, third.targets[0].price) == (2, TWO)
    assert third.hold == 200 * 2 * 3_000 + 50 * 4_000
    assert third.targets[0].price is billing.prepare_request(key, SHAPE).targets[0].price


def test_another_process_sees_a_new_version_once_its_read_cache_has_aged(tmp_path: Path) -> None:
    """The documented window: a gateway caching reads for an hour keeps pricing by the
    version it read; one caching for 50 ms prices by the new version once that has passed."""
    settings = Settings.from_env({"TALLYHUB_DATA_DIR": str(tmp_path / "data")})
    initialise(settings)
    operator = build_ledger(settings)
    slow, quick = build_ledger(settings, read_cache_seconds=3600), build_ledger(settings, read_cache_seconds=0.05)
    try:
        register_openai(operator)
        Prices(operator).set_price(MODEL, ONE)
        slow_price = slow.recent_price_book().effective(slow.clock.now()).price_for(MODEL)
        assert slow_price == ONE == quick.recent_price_book().effective(quick.clock.now()).price_for(MODEL)

        Prices(operator).set_price(MODEL, TWO)

        assert slow.recent_price_book().effective(slow.clock.now()).price_for(MODEL) is slow_price
        deadline = time.monotonic() + 10
        while quick.recent_price_book().effective(quick.clock.now()).number != 2:
            assert time.monotonic() < deadline, "the 50 ms read cache never let the new version through"
            time.sleep(0.01)
        assert quick.recent_price_book().effective(quick.clock.now()).price_for(MODEL) == TWO
    finally:
        for ledger in (operator, slow, quick):
            ledger.close()
