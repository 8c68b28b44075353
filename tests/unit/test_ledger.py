from datetime import timedelta

import pytest

from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from domain.errors import AccountNotFound, AlreadyExists, AuthenticationFailed, InvalidRequest
from tests.fakes.clock import FakeClock
from tests.fakes.note import Note


def test_a_grant_with_an_idempotency_key_is_credited_once(ledger: Ledger) -> None:
    Accounts(ledger).create_account("acme")
    first = Accounts(ledger).grant_credits("acme", 5_000, "top-up", idempotency_key="pay_1")
    again = Accounts(ledger).grant_credits("acme", 5_000, "top-up", idempotency_key="pay_1")
    assert (first.credited, again.credited) == (True, False)
    assert ledger.get_account("acme").balance == 5_000


def test_grants_without_a_key_are_each_credited(ledger: Ledger) -> None:
    Accounts(ledger).create_account("acme")
    Accounts(ledger).grant_credits("acme", 1, "a")
    Accounts(ledger).grant_credits("acme", 2, "b")
    assert ledger.get_account("acme").balance == 3


def test_starter_credits_are_granted_with_the_account(ledger: Ledger) -> None:
    account = Accounts(ledger).create_account("acme", starter_credits=7_000_000_000)
    assert ledger.get_account(account.id).balance == 7_000_000_000


def test_account_names_are_unique(ledger: Ledger) -> None:
    Accounts(ledger).create_account("acme")
    with pytest.raises(AlreadyExists):
        Accounts(ledger).create_account("acme")


def test_unknown_account_is_a_clear_error(ledger: Ledger) -> None:
    with pytest.raises(AccountNotFound):
        Accounts(ledger).grant_credits("nobody", 1)


def test_an_issued_key_authenticates_until_revoked(ledger: Ledger) -> None:
    Accounts(ledger).create_account("acme")
    issued = ApiKeys(ledger).issue_api_key("acme", "ci")
    assert ledger.authenticate(issued.plaintext).account_id == issued.account_id
    ApiKeys(ledger).revoke_api_key(issued.key_id)
    with pytest.raises(AuthenticationFailed):
        ledger.authenticate(issued.plaintext)


def test_an_expired_key_is_refused(ledger: Ledger, clock: FakeClock) -> None:
    Accounts(ledger).create_account("acme")
    issued = ApiKeys(ledger).issue_api_key("acme", expires_at=clock.now() + timedelta(hours=1))
    ledger.authenticate(issued.plaintext)
    clock.advance(hours=1)
    with pytest.raises(AuthenticationFailed):
        ledger.authenticate(issued.plaintext)


def test_keys_are_stored_only_as_digests(ledger: Ledger) -> None:
    Accounts(ledger).create_account("acme")
    issued = ApiKeys(ledger).issue_api_key("acme")
    stored = b"".join(n.state for n in ledger.recorder.select_notifications(start=1, limit=1000))
    assert issued.plaintext.encode() not in stored
    assert issued.plaintext[4:-4].encode() not in stored  # the prefix shows the kind and the last 4 only


def test_provider_secrets_are_stored_only_sealed(ledger: Ledger) -> None:
    secret = "sk-live-very-secret-value-1234"
    provider = ProviderRegistry(ledger).register_provider("openai", "openai", base_url=None, region=None, secret=secret)
    stored = b"".join(n.state for n in ledger.recorder.select_notifications(start=1, limit=1000))
    assert secret.encode() not in stored and secret[:-4].encode() not in stored
    assert provider.credentials[0].hint == "…1234"
    assert ledger.open_credential(provider, provider.credentials[0]) == secret


def test_a_provider_that_needs_a_secret_is_refused_without_one(ledger: Ledger) -> None:
    with pytest.raises(InvalidRequest):
        ProviderRegistry(ledger).register_provider("openai", "openai", base_url=None, region=None, secret=None)


def test_providers_are_listed_and_unique(ledger: Ledger) -> None:
    ProviderRegistry(ledger).register_provider(
        "a", "openai-compatible", base_url="http://127.0.0.1:1/v1", region=None, secret="sk-aaaa"
    )
    ProviderRegistry(ledger).register_provider("b", "openai", base_url=None, region=None, secret="sk-bbbb")
    with pytest.raises(AlreadyExists):
        ProviderRegistry(ledger).register_provider("a", "openai", base_url=None, region=None, secret="sk-cccc")
    assert [p.name for p in ledger.list_providers()] == ["a", "b"]


def test_each_price_change_publishes_a_new_version(ledger: Ledger) -> None:
    v1 = Prices(ledger).set_price("openai/gpt-4o-mini", price_from_credits(input="0.15", output="0.6"))
    v2 = Prices(ledger).set_price("openai/gpt-4o", price_from_credits(input="2.5", output="10"))
    book = ledger.price_book().latest
    assert (v1, v2, book.number) == (1, 2, 2)
    assert book.price_for("openai/gpt-4o-mini").input == 150_000_000


def test_a_price_needs_a_provider_slash_model_id(ledger: Ledger) -> None:
    with pytest.raises(InvalidRequest):
        Prices(ledger).set_price("gpt-4o", price_from_credits(input="1", output="1"))


def test_the_admin_key_is_recognised_and_user_keys_are_not(ledger: Ledger) -> None:
    Accounts(ledger).create_account("acme")
    user_key = ApiKeys(ledger).issue_api_key("acme").plaintext
    assert not ledger.is_admin_key(user_key)
    assert not ledger.is_admin_key("tha_wrong")


def test_a_version_published_for_later_takes_effect_only_then(ledger: Ledger, clock: FakeClock) -> None:
    ProviderRegistry(ledger).register_provider("openai", "openai", base_url=None, region=None, secret="sk-openai-aaaa")
    Prices(ledger).set_price("openai/gpt-4o", price_from_credits(input="1", output="1"))
    later = clock.now() + timedelta(hours=1)
    version = Prices(ledger).publish_prices(
        {"openai/gpt-4o": price_from_credits(input="2", output="2")}, effective_at=later
    )
    book = ledger.price_book()
    assert (version, book.effective(clock.now()).number, book.effective(later).number) == (2, 1, 2)
    with pytest.raises(InvalidRequest):
        Prices(ledger).publish_prices(
            {"openai/gpt-4o": price_from_credits(input="3", output="3")}, effective_at=clock.now() - timedelta(hours=1)
        )


def test_a_price_file_may_only_price_models_of_registered_providers(ledger: Ledger) -> None:
    with pytest.raises(InvalidRequest):
        Prices(ledger).publish_prices({"nobody/model": price_from_credits(input="1", output="1")})


def test_save_stores_the_pending_events_of_every_aggregate_given_and_a_bare_event_in_order(ledger: Ledger) -> None:
    first, second, third = Note("a"), Note("b"), Note("d")
    second.edit("c")
    (created,) = third.collect_events()  # saved as a bare event, not through its aggregate
    recordings = ledger.save(first, None, second, created)
    assert [(r.domain_event.originator_id, r.domain_event.originator_version) for r in recordings] == [
        (first.id, 1),
        (second.id, 1),
        (second.id, 2),
        (third.id, 1),
    ]
    assert [r.notification.id for r in recordings] == sorted(r.notification.id for r in recordings)
    assert (first.pending_events, second.pending_events) == ([], [])
    assert [ledger.repository.get(note.id).text for note in (first, second, third)] == ["a", "c", "d"]
