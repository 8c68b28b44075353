"""A save the store refuses (another process wrote first) is retried on fresh state, and
what the retried change saves with it is saved too: a refused save drains the pending
events of everything it was given, so those aggregates must be built again each time."""

from datetime import timedelta

from adapters.http.errors import status_of
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.billing import RequestBilling, RequestShape
from application.health import CredentialHealth
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from application.routing import Router

MODEL = "openai/gpt-test"


def test_a_failure_whose_first_save_was_refused_is_still_recorded(two_processes, monkeypatch) -> None:
    first, second = two_processes
    ProviderRegistry(first).register_provider(
        "openai", "openai", base_url=None, region=None, secret="sk-test-secret-0001"
    )
    Prices(first).set_price(MODEL, price_from_credits(input="1", output="1"))
    Accounts(first).create_account("acme", starter_credits=10**9)
    key = ApiKeys(first).issue_api_key("acme").plaintext
    billing = RequestBilling(
        first, Router(first, CredentialHealth()), mode="credits", hold_ttl=timedelta(minutes=5), status_of=status_of
    )
    opened = billing.open_request(key, RequestShape(MODEL, 100, 10, 1, False))
    load = first.get_account
    interfered = []

    def load_then_another_process_writes(ref):
        account = load(ref)
        if not interfered:
            interfered.append(True)
            Accounts(second).grant_credits("acme", 1, "meanwhile")  # makes the first save a version conflict
        return account

    monkeypatch.setattr(first, "get_account", load_then_another_process_writes)
    billing.fail_request(opened, status=502, error_code="upstream_error")
    assert interfered
    assert first.get_request_record(opened.request_id).details.outcome == "failed"
    assert load("acme").held == 0


def test_a_provider_registered_after_a_catalog_conflict_is_saved(two_processes, monkeypatch) -> None:
    first, second = two_processes
    registry = ProviderRegistry(first)
    seal = registry.seal_into
    interfered = []

    def another_process_registers_meanwhile(provider, secret, weight=1):
        if not interfered:
            interfered.append(True)
            ProviderRegistry(second).register_provider(
                "other", "openai", base_url=None, region=None, secret="sk-other-000000001"
            )
        return seal(provider, secret, weight)

    monkeypatch.setattr(registry, "seal_into", another_process_registers_meanwhile)
    registry.register_provider("openai", "openai", base_url=None, region=None, secret="sk-test-secret-0001")
    assert interfered
    assert [p.name for p in first.list_providers()] == ["other", "openai"]
    assert first.get_provider("openai").credentials
