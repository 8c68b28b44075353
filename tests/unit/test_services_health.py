"""Credential health has one way in: ``services.router.health``, the object the router
routes by and the billed call's failover learns into (no second ``Services.health``)."""

from dataclasses import fields

from adapters.bootstrap import build_services, in_memory_ledger
from adapters.services import Services
from adapters.settings import Settings


def test_credential_health_is_reached_only_through_the_router_the_failover_learns_into() -> None:
    assert "health" not in {field.name for field in fields(Services)}
    ledger = in_memory_ledger()
    ledger.initialise()
    services = build_services(Settings(), ledger=ledger)
    try:
        assert services.calls.failover.router is services.router
        assert services.router.health is services.calls.failover.router.health
    finally:
        services.close()
