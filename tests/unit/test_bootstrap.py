"""adapters/bootstrap.py: the composition root configures the Ledger through its
constructor, and wires the same services around an in-memory store for tests."""

from dataclasses import replace
from pathlib import Path

import pytest

from adapters.bootstrap import build_services, in_memory_ledger, initialise
from adapters.crypto.aes_gcm import generate_master_key
from adapters.settings import Settings
from application.accounts import Accounts
from application.health import CredentialHealth
from domain.errors import NotInitialised
from tests.fakes.clock import FakeClock


def test_build_services_gives_the_ledger_the_configured_read_cache(tmp_path: Path) -> None:
    settings = replace(
        Settings.from_env({"TALLYHUB_DATA_DIR": str(tmp_path), "TALLYHUB_MASTER_KEY": generate_master_key()}),
        read_cache_seconds=7.5,
    )
    initialise(settings)
    services = build_services(settings)
    try:
        assert services.ledger.read_cache_seconds == 7.5
    finally:
        services.close()


def test_build_services_on_an_in_memory_ledger_wires_every_service_around_it() -> None:
    clock = FakeClock()
    ledger = in_memory_ledger(clock=clock)
    admin_key = ledger.initialise()
    services = build_services(Settings(billing_mode="track"), ledger=ledger)
    try:
        assert services.ledger is ledger and services.billing.ledger is ledger and services.router.ledger is ledger
        assert services.billing.mode == "track" and services.ledger.clock is clock
        command_services = (services.prices, services.provider_registry, services.api_keys)
        assert all(service.ledger is ledger for service in command_services)
        assert services.ledger.is_admin_key(admin_key)
        account = Accounts(ledger).create_account("acme", starter_credits=5)
        services.read_models.runner.catch_up()
        balance = services.read_models.balances.get_balance(account.id)
        assert balance is not None and balance.balance == 5
    finally:
        services.close()


def test_build_services_routes_by_the_credential_health_it_is_given() -> None:
    ledger = in_memory_ledger()
    ledger.initialise()
    health = CredentialHealth(clock=lambda: 0.0)
    services = build_services(Settings(), ledger=ledger, health=health)
    try:
        assert services.router.health is health
    finally:
        services.close()


def test_build_services_refuses_an_in_memory_ledger_that_is_not_initialised() -> None:
    with pytest.raises(NotInitialised):
        build_services(Settings(), ledger=in_memory_ledger())
