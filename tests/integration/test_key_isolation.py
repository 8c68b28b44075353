"""Tenant isolation over every ``/v1/me…`` route: two accounts with billed requests in
the read models (in memory, and SQL tables in a fresh PostgreSQL schema); each key sees
its own account's rows and nothing of the other's, whatever it asks for."""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID, uuid4

import pytest
from fastapi.testclient import TestClient

from adapters.bootstrap import build_services
from adapters.crypto.aes_gcm import AesGcmKeyVault
from adapters.crypto.key_digest import HmacApiKeyScheme
from adapters.settings import Settings, parse_database_url
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from domain.usage import Usage
from projections.read_models import build_read_models
from tests.conftest import PgSchemas
from tests.fakes.clock import FakeClock
from tests.support.routes import first_route
from tests.unit.test_key_http import auth, in_process_app

MINI, BIG = "openai/gpt-4o-mini", "openai/gpt-4o"


@dataclass
class Tenant:
    name: str
    account_id: UUID
    key: str
    key_id: UUID
    requests: set[UUID]


@dataclass
class World:
    client: TestClient
    acme: Tenant
    globex: Tenant


@pytest.fixture(params=["memory", "postgres"])
def world(request: pytest.FixtureRequest, pg_schemas: PgSchemas) -> Iterator[World]:
    if request.param == "postgres":
        database = parse_database_url(pg_schemas.new_url(), data_dir=None)  # type: ignore[arg-type]
        env = database.eventsourcing_env(create_tables=True)
    else:
        database, env = None, {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    ledger = Ledger(env, vault=AesGcmKeyVault(b"\x07" * 32), key_scheme_factory=HmacApiKeyScheme, clock=FakeClock())
    ledger.initialise()
    read_models = build_read_models(database, ledger)
    read_models.create_tables()
    services = build_services(Settings(), ledger=ledger, read_models=read_models)
    ProviderRegistry(ledger).register_provider(
        "openai", "openai", base_url="http://127.0.0.1:9/v1", region=None, secret="sk-iso-secret-0001"
    )
    Prices(ledger).set_price(MINI, price_from_credits(input="2", output="8"))
    Prices(ledger).set_price(BIG, price_from_credits(input="5", output="15"))
    tenants = []
    for name, model, count in (("acme", MINI, 3), ("globex", BIG, 2)):
        Accounts(ledger).create_account(name, starter_credits=10**12)
        issued = ApiKeys(ledger).issue_api_key(name, name)
        tenant = Tenant(name, issued.account_id, issued.plaintext, issued.key_id, set())
        for n in range(count):
            opened = services.billing.open_request(tenant.key, _shape(model))
            if n == count - 1:
                services.billing.fail_request(opened, status=502, error_code="upstream_error")
            else:
                route = first_route(services.billing, opened)
                services.billing.complete_request(opened, route, Usage(input_tokens=100 + n, output_tokens=10))
            tenant.requests.add(opened.request_id)
        tenants.append(tenant)
    yield World(TestClient(in_process_app(services)), *tenants)
    read_models.close()
    ledger.close()


def _shape(model: str):  # type: ignore[no-untyped-def]
    from application.billing import RequestShape

    return RequestShape(model=model, prompt_bytes=100, max_output_tokens=50, choices=1, stream=False)


def get(world: World, tenant: Tenant, path: str) -> dict:
    response = world.client.get(path, headers=auth(tenant.key))
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("who", ["acme", "globex"])
def test_each_key_reads_only_its_own_account(world: World, who: str) -> None:
    me, other = (world.acme, world.globex) if who == "acme" else (world.globex, world.acme)
    account = get(world, me, "/v1/me")
    assert (account["id"], account["name"], account["key"]["id"]) == (str(me.account_id), me.name, str(me.key_id))
    requests = get(world, me, "/v1/me/requests")["data"]
    assert {UUID(r["request_id"]) for r in requests} == me.requests
    usage = get(world, me, "/v1/me/usage")["data"]
    assert sum(row["requests"] for row in usage) == len(me.requests)
    assert {row["api_key_id"] for row in usage} == {str(me.key_id)}
    for request_id in me.requests:
        assert UUID(get(world, me, f"/v1/me/requests/{request_id}")["request_id"]) == request_id
    everything = json.dumps([account, requests, usage])
    for marker in (
        str(other.account_id),
        other.account_id.hex,
        str(other.key_id),
        other.name,
        *(str(r) for r in other.requests),
    ):
        assert marker not in everything


def test_another_accounts_request_is_not_found_like_a_missing_one(world: World) -> None:
    theirs = next(iter(world.globex.requests))
    foreign = world.client.get(f"/v1/me/requests/{theirs}", headers=auth(world.acme.key))
    missing = world.client.get(f"/v1/me/requests/{uuid4()}", headers=auth(world.acme.key))
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["error"]["code"] == missing.json()["error"]["code"] == "not_found"


def test_query_parameters_cannot_widen_the_scope(world: World) -> None:
    for query in (
        f"?account={world.globex.name}",
        f"?account_id={world.globex.account_id}",
        f"?model={BIG}",
        f"?api_key_id={world.globex.key_id}",
        "?limit=1000",
    ):
        rows = world.client.get("/v1/me/requests" + query, headers=auth(world.acme.key)).json()["data"]
        assert {UUID(r["request_id"]) for r in rows} <= world.acme.requests, query
        usage = world.client.get("/v1/me/usage" + query, headers=auth(world.acme.key)).json()["data"]
        assert all(row["api_key_id"] == str(world.acme.key_id) for row in usage), query


def test_the_operators_cost_is_not_shown_to_the_customer(world: World) -> None:
    for path in ("/v1/me/requests", "/v1/me/usage"):
        rows = get(world, world.acme, path)["data"]
        assert rows and all("cost" not in row and "charge" in row for row in rows)


def test_a_revoked_or_bad_key_gets_401_on_every_me_route(world: World) -> None:
    request_id = next(iter(world.acme.requests))
    paths = ["/v1/me", "/v1/me/usage", "/v1/me/requests", f"/v1/me/requests/{request_id}"]
    world.client.app.state.services.api_keys.revoke_api_key(world.acme.key_id)  # type: ignore[attr-defined]
    for key in (world.acme.key, "thk_not-a-key", ""):
        for path in paths:
            response = world.client.get(path, headers=auth(key) if key else {})
            assert response.status_code == 401, (key[:6], path)
    assert get(world, world.globex, "/v1/me")["name"] == "globex"


def test_the_balance_is_the_accounts_own(world: World) -> None:
    ledger = world.client.app.state.services.ledger  # type: ignore[attr-defined]
    for tenant in (world.acme, world.globex):
        balance = get(world, tenant, "/v1/me")["balance"]
        account = ledger.get_account(tenant.account_id)
        assert (balance["balance"], balance["held"], balance["available"]) == (
            account.balance,
            account.held,
            account.available,
        )
    assert get(world, world.acme, "/v1/me")["balance"] != get(world, world.globex, "/v1/me")["balance"]


def test_usage_can_be_limited_to_a_time_window(world: World) -> None:
    clock_now = world.client.app.state.services.ledger.clock.now()  # type: ignore[attr-defined]
    later = (clock_now + timedelta(days=3650)).isoformat().replace("+00:00", "Z")
    assert world.client.get(f"/v1/me/usage?since={later}", headers=auth(world.acme.key)).json()["data"] == []
