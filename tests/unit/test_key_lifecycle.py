"""Provider credentials (rotate with a grace period, delete, masked) and user API keys
(rotate, grace, per-key models) on the in-memory ledger."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from adapters.http.errors import status_of
from application.accounts import Accounts
from application.api_keys import ApiKeys, parse_models
from application.ledger import Ledger
from application.prices import Prices
from application.providers import ProviderRegistry
from application.routing import Router
from domain.errors import AuthenticationFailed, InvalidRequest, PermissionDenied
from tests.fakes.clock import FakeClock

OLD = "sk-old-provider-secret-aaaa"
NEW = "sk-new-provider-secret-bbbb"


@pytest.fixture
def openai(ledger: Ledger) -> str:
    ProviderRegistry(ledger).register_provider("openai", "openai", base_url=None, region=None, secret=OLD)
    return ledger.get_provider("openai").credentials[0].credential_id


def usable_secrets(ledger: Ledger, clock: FakeClock) -> set[str]:
    provider = ledger.get_provider("openai")
    return {ledger.open_credential(provider, c) for c in provider.usable_credentials(clock.now())}


# --- provider credentials -----------------------------------------------------------


def test_rotating_without_grace_disables_the_old_credential_at_once(
    ledger: Ledger, clock: FakeClock, openai: str
) -> None:
    rotation = ProviderRegistry(ledger).rotate_credential("openai", NEW)
    assert rotation.old_credential_id == openai and rotation.retires_at is None
    assert usable_secrets(ledger, clock) == {NEW}
    old = ledger.get_provider("openai").credential(openai)
    assert not old.enabled and old.replaced_by == rotation.new_credential_id


def test_during_the_grace_period_both_credentials_serve_then_only_the_new(
    ledger: Ledger, clock: FakeClock, openai: str
) -> None:
    rotation = ProviderRegistry(ledger).rotate_credential("openai", NEW, grace=timedelta(minutes=10))
    assert rotation.retires_at == clock.now() + timedelta(minutes=10)
    assert usable_secrets(ledger, clock) == {OLD, NEW}
    clock.advance(minutes=10)
    assert usable_secrets(ledger, clock) == {NEW}, "routing leaves the old one out as soon as the grace ends"
    assert ProviderRegistry(ledger).retire_due_credentials() == [("openai", openai)]
    assert not ledger.get_provider("openai").credential(openai).enabled
    assert ProviderRegistry(ledger).retire_due_credentials() == []


def test_a_credential_past_its_grace_period_is_not_usable_on_the_wall_clock_either(ledger: Ledger, openai: str) -> None:
    """Routing asks without a time (wall clock): a grace period already over leaves the old one out."""
    ProviderRegistry(ledger).rotate_credential("openai", NEW, grace=timedelta(seconds=1))
    provider = ledger.get_provider("openai")
    past = datetime.now(UTC) - timedelta(seconds=1)
    provider.credentials = [
        replace(c, retires_at=past) if c.credential_id == openai else c for c in provider.credentials
    ]
    assert [c.hint for c in provider.usable_credentials()] == ["…bbbb"]


def test_a_provider_with_several_credentials_needs_to_be_told_which(ledger: Ledger, openai: str) -> None:
    ProviderRegistry(ledger).add_credential("openai", "sk-second-secret-cccc")
    with pytest.raises(InvalidRequest, match="--credential"):
        ProviderRegistry(ledger).rotate_credential("openai", NEW)
    rotation = ProviderRegistry(ledger).rotate_credential("openai", NEW, credential_id=openai)
    assert rotation.old_credential_id == openai
    assert ledger.get_provider("openai").credential(rotation.new_credential_id).weight == 1


def test_a_rotated_credential_cannot_be_rotated_again(ledger: Ledger, openai: str) -> None:
    ProviderRegistry(ledger).rotate_credential("openai", NEW, grace=timedelta(minutes=1))
    with pytest.raises(InvalidRequest, match="already rotated"):
        ProviderRegistry(ledger).rotate_credential("openai", "sk-third-secret-dddd", credential_id=openai)


def test_grace_periods_are_bounded(ledger: Ledger, openai: str) -> None:
    for grace in (timedelta(seconds=-1), timedelta(days=31)):
        with pytest.raises(InvalidRequest, match="grace"):
            ProviderRegistry(ledger).rotate_credential("openai", NEW, grace=grace)


def test_a_deleted_credential_is_gone_but_the_last_one_is_kept(ledger: Ledger, clock: FakeClock, openai: str) -> None:
    with pytest.raises(InvalidRequest, match="last credential"):
        ProviderRegistry(ledger).delete_credential("openai", openai)
    rotation = ProviderRegistry(ledger).rotate_credential("openai", NEW)
    provider = ProviderRegistry(ledger).delete_credential("openai", openai)
    assert [c.credential_id for c in provider.credentials] == [rotation.new_credential_id]
    ProviderRegistry(ledger).disable_provider("openai")
    assert ProviderRegistry(ledger).delete_credential("openai", rotation.new_credential_id).credentials == []


def test_hints_show_at_most_the_last_four_characters(ledger: Ledger, openai: str) -> None:
    ProviderRegistry(ledger).rotate_credential("openai", NEW)
    ProviderRegistry(ledger).add_credential("openai", "short")
    for credential in ledger.get_provider("openai").credentials:
        hint = credential.hint.lstrip("…")
        assert len(hint) <= 4
    assert [c.hint for c in ledger.get_provider("openai").credentials] == ["…aaaa", "…bbbb", "…"]


# --- user API keys ------------------------------------------------------------------


def test_a_rotated_key_is_revoked_at_once_and_the_new_one_works(ledger: Ledger) -> None:
    Accounts(ledger).create_account("acme")
    old = ApiKeys(ledger).issue_api_key("acme", "ci", models=["openai/gpt-4o-mini"])
    rotation = ApiKeys(ledger).rotate_api_key(old.key_id)
    with pytest.raises(AuthenticationFailed):
        ledger.authenticate(old.plaintext)
    new = ledger.authenticate(rotation.issued.plaintext)
    assert (new.account_id, new.name, new.allowed_models) == (old.account_id, "ci", ["openai/gpt-4o-mini"])
    assert ledger.get_api_key(old.key_id).replaced_by == new.id
    assert rotation.issued.plaintext != old.plaintext


def test_a_rotated_key_keeps_working_during_its_grace_period(ledger: Ledger, clock: FakeClock) -> None:
    Accounts(ledger).create_account("acme")
    old = ApiKeys(ledger).issue_api_key("acme")
    rotation = ApiKeys(ledger).rotate_api_key(old.key_id, grace=timedelta(minutes=5))
    ledger.authenticate(old.plaintext)
    ledger.authenticate(rotation.issued.plaintext)
    clock.advance(minutes=5)
    with pytest.raises(AuthenticationFailed):
        ledger.authenticate(old.plaintext)
    ledger.authenticate(rotation.issued.plaintext)
    with pytest.raises(InvalidRequest, match="rotated"):
        ApiKeys(ledger).rotate_api_key(old.key_id)


def test_rotation_keeps_the_old_expiry(ledger: Ledger, clock: FakeClock) -> None:
    Accounts(ledger).create_account("acme")
    old = ApiKeys(ledger).issue_api_key("acme", expires_at=clock.now() + timedelta(days=1))
    new = ApiKeys(ledger).rotate_api_key(old.key_id).issued
    assert ledger.get_api_key(new.key_id).expires_at == clock.now() + timedelta(days=1)


def test_a_key_limited_to_models_allows_only_those(ledger: Ledger) -> None:
    Accounts(ledger).create_account("acme")
    issued = ApiKeys(ledger).issue_api_key("acme", models=parse_models("openai/gpt-4o-mini, anthropic/*,fast"))
    key = ledger.authenticate(issued.plaintext)
    assert key.allows("openai/gpt-4o-mini") and key.allows("anthropic/claude-sonnet-4") and key.allows("fast")
    assert not key.allows("openai/gpt-4o") and not key.allows("anthropic") and not key.allows("slow")
    with pytest.raises(PermissionDenied):
        key.ensure_allows("openai/gpt-4o")


def test_an_unlimited_key_allows_every_model_and_limits_can_change(ledger: Ledger) -> None:
    Accounts(ledger).create_account("acme")
    issued = ApiKeys(ledger).issue_api_key("acme")
    assert ledger.authenticate(issued.plaintext).allows("openai/anything")
    ApiKeys(ledger).set_allowed_models(issued.key_id, ["openai/gpt-4o-mini"])
    assert not ledger.authenticate(issued.plaintext).allows("openai/anything")
    ApiKeys(ledger).set_allowed_models(issued.key_id, None)
    assert ledger.authenticate(issued.plaintext).allows("openai/anything")


@pytest.mark.parametrize("text", ["openai/gpt 4o", "*/x", "openai/gpt*", ",,", "a/b/*x"])
def test_bad_model_lists_are_refused(text: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_models(text)


def test_a_model_limited_key_is_refused_when_billing_opens_a_request(ledger: Ledger, router: Router) -> None:
    from application.billing import RequestBilling, RequestShape
    from application.pricing_input import price_from_credits

    ProviderRegistry(ledger).register_provider("openai", "openai", base_url=None, region=None, secret=OLD)
    Prices(ledger).set_price("openai/gpt-4o", price_from_credits(input="1", output="1"))
    Accounts(ledger).create_account("acme", starter_credits=10**12)
    issued = ApiKeys(ledger).issue_api_key("acme", models=["openai/gpt-4o-mini"])
    billing = RequestBilling(ledger, router, mode="credits", hold_ttl=timedelta(minutes=5), status_of=status_of)
    shape = RequestShape(model="openai/gpt-4o", prompt_bytes=10, max_output_tokens=10, choices=1, stream=False)
    with pytest.raises(PermissionDenied):
        billing.open_request(issued.plaintext, shape)
    assert ledger.get_account("acme").holds == {}
