"""The admin routes for secrets and keys and the ``/v1/me`` routes, in process (the
FastAPI app over an in-memory ledger and read models, no upstream): admin and user
keys are separate, secrets never come back, rotations take effect at once."""

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from adapters.bootstrap import build_services, in_memory_ledger
from adapters.crypto.aes_gcm import generate_master_key
from adapters.crypto.key_ring import KeyRing
from adapters.http import admin_keys, me
from adapters.http.app import create_app
from adapters.services import Services
from adapters.settings import Settings
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.ledger import Ledger
from application.providers import ProviderRegistry
from tests.fakes.clock import FakeClock

PROVIDER_SECRET = "sk-http-provider-secret-5555"


def in_process_app(services: Services) -> FastAPI:
    """The gateway's app with this issue's routers (included once, whether or not create_app has them)."""
    app = create_app(services, run_projections=False)
    paths = {getattr(route, "path", "") for route in app.routes}
    if "/v1/me" not in paths:
        app.include_router(me.router)
    if "/admin/v1/secrets" not in paths:
        app.include_router(admin_keys.router)
    return app


@dataclass
class Gateway:
    client: TestClient
    ledger: Ledger
    admin_key: str

    def admin(self, method: str, path: str, **kwargs: object) -> object:
        response = self.client.request(method, "/admin/v1" + path, headers=auth(self.admin_key), **kwargs)
        assert response.status_code < 300, response.text
        return response.json()


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    ring = KeyRing.parse(f"k2:{generate_master_key()},k1:{generate_master_key()}", source="TEST")
    ledger = in_memory_ledger(master_key=ring, clock=FakeClock())
    admin_key = ledger.initialise()
    ProviderRegistry(ledger).register_provider("openai", "openai", base_url=None, region=None, secret=PROVIDER_SECRET)
    Accounts(ledger).create_account("acme", starter_credits=5 * 10**9)
    yield Gateway(TestClient(in_process_app(build_services(Settings(), ledger=ledger))), ledger, admin_key)
    ledger.close()


def test_a_user_key_never_reaches_an_admin_route(gateway: Gateway) -> None:
    user_key = ApiKeys(gateway.ledger).issue_api_key("acme").plaintext
    for method, path in [
        ("GET", "/admin/v1/providers"),
        ("GET", "/admin/v1/secrets"),
        ("POST", "/admin/v1/secrets/rotate-master"),
        ("GET", "/admin/v1/accounts"),
        ("POST", "/admin/v1/keys"),
        ("PUT", "/admin/v1/keys/x/models"),
    ]:
        response = gateway.client.request(method, path, headers=auth(user_key), json={})
        assert response.status_code == 401, (path, response.text)
        assert response.json()["error"]["code"] == "invalid_api_key"


def test_the_admin_key_is_not_a_user_key(gateway: Gateway) -> None:
    for path in ("/v1/me", "/v1/me/usage", "/v1/me/requests", "/v1/models"):
        assert gateway.client.get(path, headers=auth(gateway.admin_key)).status_code == 401


def test_a_key_rotated_over_the_admin_api_is_refused_at_once(gateway: Gateway) -> None:
    old = gateway.admin("POST", "/keys", json={"account": "acme", "name": "ci", "models": ["openai/gpt-4o-mini"]})
    assert gateway.client.get("/v1/me", headers=auth(old["key"])).status_code == 200
    rotated = gateway.admin("POST", f"/keys/{old['id']}/rotate", json={})
    assert rotated["allowed_models"] == ["openai/gpt-4o-mini"] and rotated["replaces"]["revoked"] is True
    assert gateway.client.get("/v1/me", headers=auth(old["key"])).status_code == 401
    mine = gateway.client.get("/v1/me", headers=auth(rotated["key"])).json()
    assert mine["key"]["id"] == rotated["id"] and mine["name"] == "acme"
    shown = gateway.admin("GET", f"/keys/{old['id']}")
    assert "key" not in shown and old["key"] not in str(shown)


def test_a_key_rotated_with_a_grace_period_works_until_it_ends(gateway: Gateway) -> None:
    old = gateway.admin("POST", "/keys", json={"account": "acme"})
    rotated = gateway.admin("POST", f"/keys/{old['id']}/rotate", json={"grace_seconds": 60})
    assert rotated["replaces"]["retires_at"] is not None
    assert gateway.client.get("/v1/me", headers=auth(old["key"])).status_code == 200
    gateway.ledger.clock.advance(seconds=60)  # type: ignore[attr-defined]
    assert gateway.client.get("/v1/me", headers=auth(old["key"])).status_code == 401
    assert gateway.client.get("/v1/me", headers=auth(rotated["key"])).status_code == 200


def test_model_limits_are_set_and_cleared_over_the_admin_api(gateway: Gateway) -> None:
    issued = gateway.admin("POST", "/keys", json={"account": "acme"})
    assert issued["allowed_models"] is None
    limited = gateway.admin("PUT", f"/keys/{issued['id']}/models", json={"models": ["openai/*", "fast"]})
    assert limited["allowed_models"] == ["openai/*", "fast"]
    assert gateway.client.get("/v1/me", headers=auth(issued["key"])).json()["key"]["allowed_models"] == [
        "openai/*",
        "fast",
    ]
    bad = gateway.client.put(
        f"/admin/v1/keys/{issued['id']}/models", headers=auth(gateway.admin_key), json={"models": ["openai/gpt 4o"]}
    )
    assert bad.status_code == 400
    assert gateway.admin("PUT", f"/keys/{issued['id']}/models", json={"models": None})["allowed_models"] is None


def test_credentials_are_rotated_and_deleted_over_the_admin_api_and_never_shown(gateway: Gateway) -> None:
    new_secret = "sk-http-provider-rotated-6666"
    rotated = gateway.admin(
        "POST", "/providers/openai/credentials/rotate", json={"api_key": new_secret, "grace_seconds": 30}
    )
    old_id, new_id = rotated["rotated"]["old_credential_id"], rotated["rotated"]["new_credential_id"]
    assert [c["hint"] for c in rotated["credentials"]] == ["…5555", "…6666"]
    assert all(c["enabled"] for c in rotated["credentials"])
    deleted = gateway.admin("DELETE", f"/providers/openai/credentials/{old_id}")
    assert [c["id"] for c in deleted["credentials"]] == [new_id]
    assert PROVIDER_SECRET not in str(rotated) + str(deleted) and new_secret not in str(rotated) + str(deleted)
    last = gateway.client.delete(f"/admin/v1/providers/openai/credentials/{new_id}", headers=auth(gateway.admin_key))
    assert last.status_code == 400 and "last credential" in last.json()["error"]["message"]


def test_secrets_status_and_rotation_over_the_admin_api(gateway: Gateway) -> None:
    # The fixture's ring is (k2, k1): everything is already under k2, k1 is retirable.
    status = gateway.admin("GET", "/secrets")
    assert status["newest_kid"] == "k2" and status["retirable_kids"] == ["k1"]
    assert status["in_use"]["k2"]["count"] == 2 and not status["rotation_needed"]
    assert gateway.admin("POST", "/secrets/rotate-master")["rewrapped"] == []
