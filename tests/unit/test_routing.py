import random
from collections import Counter

import pytest

from adapters.bootstrap import in_memory_ledger
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.billing import RequestBilling, RequestShape
from application.health import CredentialHealth
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from application.routing import Router
from domain.errors import InvalidRequest, ModelNotFound
from tests.fakes.clock import FakeClock


@pytest.fixture
def two_providers(ledger: Ledger) -> None:
    ProviderRegistry(ledger).register_provider(
        "openai", "openai", base_url=None, region=None, secret="sk-openai-aaaa", weight=3
    )
    ProviderRegistry(ledger).add_credential("openai", "sk-openai-bbbb", weight=1)
    ProviderRegistry(ledger).register_provider(
        "backup", "openai-compatible", base_url="http://127.0.0.1:9/v1", region=None, secret="sk-backup-cccc"
    )
    Prices(ledger).set_price("openai/gpt-4o", price_from_credits(input="2.5", output="10"))
    Prices(ledger).set_price("backup/gpt-4o-mini", price_from_credits(input="0.15", output="0.6"))


def test_an_alias_expands_to_its_model_then_its_fallbacks(ledger: Ledger, router: Router, two_providers: None) -> None:
    Prices(ledger).set_alias("smart", ["openai/gpt-4o", "backup/gpt-4o-mini"])
    targets = router.targets("smart", ledger.price_book().latest)
    assert [t.model for t in targets] == ["openai/gpt-4o", "backup/gpt-4o-mini"]
    assert targets[1].price.input == 150_000_000


def test_unknown_models_and_disabled_providers_are_not_found(
    ledger: Ledger, router: Router, two_providers: None
) -> None:
    for model in ("nobody/x", "no-alias", "openai/"):
        with pytest.raises(ModelNotFound):
            router.targets(model, ledger.price_book().latest)
    ProviderRegistry(ledger).disable_provider("openai")
    with pytest.raises(ModelNotFound):
        router.targets("openai/gpt-4o", ledger.price_book().latest)


def test_credentials_are_tried_in_weighted_random_order(ledger: Ledger, two_providers: None) -> None:
    router = Router(ledger, CredentialHealth(), rng=random.Random(1))
    target = router.targets("openai/gpt-4o", ledger.price_book().latest)[0]
    firsts = Counter(next(router.routes(target)).secret for _ in range(2000))
    assert 0.70 < firsts["sk-openai-aaaa"] / 2000 < 0.80  # weight 3 of 4
    assert {r.secret for r in router.routes(target)} == {"sk-openai-aaaa", "sk-openai-bbbb"}


def test_cooling_and_disabled_credentials_are_left_out(
    ledger: Ledger, router: Router, health: CredentialHealth, two_providers: None
) -> None:
    target = router.targets("openai/gpt-4o", ledger.price_book().latest)[0]
    first, second = list(router.routes(target))
    health.rate_limited(first.credential_id, 30)
    assert [r.credential_id for r in router.routes(target)] == [second.credential_id]
    ProviderRegistry(ledger).disable_credential("openai", second.credential_id, reason="test", automatic=True)
    target = router.targets("openai/gpt-4o", ledger.price_book().latest)[0]
    assert list(router.routes(target)) == []
    error = router.unavailable([target])
    assert (error.status, error.code) == (429, "upstream_rate_limited") and 1 <= int(error.retry_after) <= 30


def test_with_no_usable_credential_at_all_the_error_is_503(ledger: Ledger, router: Router, two_providers: None) -> None:
    target = router.targets("backup/gpt-4o-mini", ledger.price_book().latest)[0]
    only = next(router.routes(target))
    ProviderRegistry(ledger).disable_credential("backup", only.credential_id, reason="operator")
    target = router.targets("backup/gpt-4o-mini", ledger.price_book().latest)[0]
    assert router.unavailable([target]).status == 503


def test_the_hold_covers_the_dearest_fallback(
    ledger: Ledger, credits_billing: RequestBilling, two_providers: None
) -> None:
    Prices(ledger).set_alias("cheap-first", ["backup/gpt-4o-mini", "openai/gpt-4o"])
    Accounts(ledger).create_account("acme", starter_credits=10**12)
    key = ApiKeys(ledger).issue_api_key("acme").plaintext
    shape = RequestShape("cheap-first", prompt_bytes=1000, max_output_tokens=100, choices=1, stream=False)
    opened = credits_billing.open_request(key, shape)
    # gpt-4o's worst case, not the mini's: every prompt token a 1-hour cache write (2 × input)
    assert opened.hold == 1000 * 2 * 2_500 + 100 * 10_000


def test_unpriced_fallbacks_are_dropped_in_credits_mode(
    ledger: Ledger, credits_billing: RequestBilling, two_providers: None
) -> None:
    Prices(ledger).set_alias("mixed", ["openai/unpriced", "backup/gpt-4o-mini"])
    Accounts(ledger).create_account("acme", starter_credits=10**12)
    key = ApiKeys(ledger).issue_api_key("acme").plaintext
    opened = credits_billing.open_request(key, RequestShape("mixed", 10, 10, 1, False))
    assert [t.model for t in opened.targets] == ["backup/gpt-4o-mini"]


def test_alias_validation(ledger: Ledger, two_providers: None) -> None:
    for name, models in (("has/slash", ["openai/gpt-4o"]), ("ok", []), ("ok", ["no-slash"]), ("ok", ["a/b", "a/b"])):
        with pytest.raises(InvalidRequest):
            Prices(ledger).set_alias(name, models)
    Prices(ledger).set_alias("ok", ["openai/gpt-4o"])
    Prices(ledger).remove_alias("ok")
    assert Prices(ledger).aliases() == {}


def test_each_route_carries_its_credentials_own_secret_opened_once(
    ledger: Ledger, router: Router, two_providers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    open_credential = ledger.open_credential
    monkeypatch.setattr(ledger, "open_credential", lambda p, c: opened.append(c.credential_id) or open_credential(p, c))
    target = router.targets("openai/gpt-4o", ledger.price_book().latest)[0]
    for _ in range(5):
        secrets = {route.credential_id: route.secret for route in router.routes(target)}
        assert sorted(secrets.values()) == ["sk-openai-aaaa", "sk-openai-bbbb"]
    assert sorted(opened) == sorted(secrets)  # each envelope opened once, then kept
    ProviderRegistry(ledger).add_credential("openai", "sk-openai-dddd")  # a new envelope is opened when first used
    target = router.targets("openai/gpt-4o", ledger.price_book().latest)[0]
    assert sorted(route.secret for route in router.routes(target)) == [
        "sk-openai-aaaa",
        "sk-openai-bbbb",
        "sk-openai-dddd",
    ]
    assert len(opened) == 3


def test_a_route_follows_its_providers_policy_secret_and_price_through_the_read_cache(clock: FakeClock) -> None:
    ledger = in_memory_ledger(clock=clock, read_cache_seconds=60)  # a hot path's ledger: providers read cached
    ledger.initialise()
    registry = ProviderRegistry(ledger)
    registry.register_provider(
        "backup", "openai-compatible", base_url="http://127.0.0.1:9/v1", region=None, secret="sk-a-1111"
    )
    prices = Prices(ledger)
    prices.set_price("backup/gpt-4o-mini", price_from_credits(input="0.15", output="0.6"))
    router = Router(ledger, CredentialHealth(), rng=random.Random(3))

    def route() -> tuple[str | None, float | None, int]:
        book = ledger.recent_price_book().effective(clock.now())  # as a request reads it
        target = router.targets("backup/gpt-4o-mini", book)[0]
        chosen = next(router.routes(target))
        assert target.price is not None
        return chosen.secret, chosen.policy.timeout_total, target.price.input

    assert route() == route() == ("sk-a-1111", None, 150_000_000)
    registry.set_policy("backup", timeout_total=5)
    assert route() == ("sk-a-1111", 5, 150_000_000)
    registry.rotate_credential("backup", "sk-b-2222")
    assert route() == ("sk-b-2222", 5, 150_000_000)
    prices.set_price("backup/gpt-4o-mini", price_from_credits(input="0.2", output="0.6"))
    assert route() == ("sk-b-2222", 5, 200_000_000)
    registry.disable_provider("backup")
    with pytest.raises(ModelNotFound):
        route()
    ledger.close()
