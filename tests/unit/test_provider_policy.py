"""A provider's timeouts and retries (domain/provider.py ``UpstreamPolicy``): a provider
registered without them (every one older code registered) reads as the defaults, today's
behaviour; each change is one ``UpstreamPolicySet`` event holding the whole policy, which
replays; bad values are refused naming the field; the route carries the policy and the
adapters build aiohttp's timeouts from it. Set and shown by the CLI
(``providers add|update|show``) and the admin API (``POST``/``PATCH``/``GET`` providers)."""

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from adapters.bootstrap import build_services, in_memory_ledger
from adapters.http.app import create_app
from adapters.providers.base import UpstreamTimeouts
from adapters.settings import Settings
from application.health import CredentialHealth
from application.ledger import Ledger
from application.providers import ProviderRegistry
from application.routing import Router, Target
from domain.errors import InvalidRequest
from domain.provider import Provider, UpstreamPolicy
from tests.fakes.clock import FakeClock
from tests.support.gateway import REPO, gateway_env

DEFAULTS = {
    "timeout_connect": 10.0,
    "timeout_first_byte": None,
    "timeout_total": None,
    "retries": 0,
    "retry_base_ms": 250,
}


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    ledger = in_memory_ledger(master_key=bytes(32), clock=FakeClock())
    ledger.initialise()
    yield ledger
    ledger.close()


def register(ledger: Ledger, policy: UpstreamPolicy | None = None) -> Provider:
    return ProviderRegistry(ledger).register_provider(
        "openai", "openai", base_url=None, region=None, secret="sk-policy-test-000000001", policy=policy
    )


def policy_events(ledger: Ledger) -> list[Any]:
    provider = ledger.get_provider("openai")
    return [e for e in ledger.repository.event_store.get(provider.id) if isinstance(e, Provider.UpstreamPolicySet)]


def test_a_provider_registered_without_a_policy_has_the_defaults_and_no_policy_event(ledger: Ledger) -> None:
    register(ledger)
    assert ledger.get_provider("openai").policy.to_dict() == DEFAULTS == UpstreamPolicy().to_dict()
    assert policy_events(ledger) == []


def test_each_change_is_one_event_with_the_whole_policy_and_it_replays(ledger: Ledger) -> None:
    register(ledger, UpstreamPolicy(timeout_total=60, retries=2))
    registry = ProviderRegistry(ledger)
    registry.set_policy("openai", timeout_first_byte=5, retry_base_ms=100)
    registry.set_policy("openai", timeout_first_byte=5)  # unchanged: nothing saved
    events = policy_events(ledger)
    assert [(e.timeout_connect, e.timeout_first_byte, e.timeout_total, e.retries, e.retry_base_ms) for e in events] == [
        (10.0, None, 60.0, 2, 250),
        (10.0, 5.0, 60.0, 2, 100),
    ]
    replayed = ledger.repository.get(ledger.get_provider("openai").id)  # from its events
    assert replayed.policy == UpstreamPolicy(10, 5, 60, 2, 100)


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"timeout_connect": 0}, "timeout_connect"),
        ({"timeout_total": -1}, "timeout_total"),
        ({"timeout_first_byte": 3601}, "timeout_first_byte"),
        ({"timeout_total": float("nan")}, "timeout_total"),
        ({"timeout_connect": None}, "timeout_connect"),
        ({"retries": 11}, "retries"),
        ({"retries": -1}, "retries"),
        ({"retries": 1.5}, "retries"),
        ({"retries": True}, "retries"),
        ({"retry_base_ms": 0}, "retry_base_ms"),
        ({"speed": 3}, "speed"),
    ],
)
def test_a_bad_value_is_refused_naming_its_field_and_nothing_changes(
    ledger: Ledger, changes: dict[str, Any], param: str
) -> None:
    register(ledger)
    with pytest.raises(InvalidRequest) as refused:
        ProviderRegistry(ledger).set_policy("openai", **changes)
    assert refused.value.param == param
    assert policy_events(ledger) == []


def test_the_route_carries_the_policy_and_the_adapters_timeouts_follow_it(ledger: Ledger) -> None:
    register(ledger, UpstreamPolicy(timeout_connect=2, timeout_total=45))
    provider = ledger.get_provider("openai")
    route = Router(ledger, CredentialHealth()).route_with(Target("openai/gpt-4o", "gpt-4o", provider, None), None)
    assert route.policy == provider.policy
    timeouts = UpstreamTimeouts(default_total_seconds=300)
    built = timeouts.for_route(route)
    assert (built.total, built.sock_connect) == (45.0, 2.0)
    assert timeouts.for_route(route) is built  # built once per policy
    default = timeouts.for_route(
        Router(ledger, CredentialHealth()).route_with(
            Target("x/y", "y", Provider("x", "openai", None, None), None), None
        )
    )
    assert (default.total, default.sock_connect) == (300, 10.0)  # the gateway's total, today's connect bound


# -- the admin API ----------------------------------------------------------------------------


@dataclass
class Admin:
    client: TestClient
    ledger: Ledger
    admin_key: str

    def call(self, method: str, path: str, **kwargs: Any) -> Response:
        headers = {"authorization": f"Bearer {self.admin_key}", "content-type": "application/json"}
        return self.client.request(method, "/admin/v1" + path, headers=headers, **kwargs)


@pytest.fixture
def admin() -> Iterator[Admin]:
    ledger = in_memory_ledger(master_key=bytes(32), clock=FakeClock())
    admin_key = ledger.initialise()
    services = build_services(Settings(), ledger=ledger)
    yield Admin(TestClient(create_app(services, run_projections=False)), ledger, admin_key)
    ledger.close()


def test_the_admin_api_sets_updates_and_shows_timeouts_and_retries(admin: Admin) -> None:
    created = admin.call(
        "POST",
        "/providers",
        json={"name": "local", "kind": "ollama", "timeout_first_byte": 5, "retries": 2},
    )
    assert created.status_code == 201, created.text
    assert {k: created.json()[k] for k in DEFAULTS} == {**DEFAULTS, "timeout_first_byte": 5.0, "retries": 2}
    updated = admin.call("PATCH", "/providers/local", json={"timeout_total": 90, "timeout_first_byte": None})
    assert updated.status_code == 200, updated.text
    expected = {**DEFAULTS, "timeout_total": 90.0, "retries": 2}  # null: back to the default; unnamed: kept
    assert {k: updated.json()[k] for k in DEFAULTS} == expected
    shown = admin.call("GET", "/providers/local").json()
    assert {k: shown[k] for k in DEFAULTS} == expected
    listed = admin.call("GET", "/providers").json()["data"]
    assert {k: listed[0][k] for k in DEFAULTS} == expected
    assert admin.ledger.get_provider("local").policy == UpstreamPolicy(timeout_total=90, retries=2)


@pytest.mark.parametrize(
    ("body", "param"),
    [({"retries": 99}, "retries"), ({"timeout_connect": 0}, "timeout_connect"), ({}, None)],
)
def test_the_admin_api_refuses_a_bad_policy_in_openais_error_shape(
    admin: Admin, body: dict[str, Any], param: str | None
) -> None:
    assert admin.call("POST", "/providers", json={"name": "local", "kind": "ollama"}).status_code == 201
    response = admin.call("PATCH", "/providers/local", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert admin.ledger.get_provider("local").policy == UpstreamPolicy()


def test_the_admin_api_refuses_a_bad_policy_when_adding_and_adds_nothing(admin: Admin) -> None:
    response = admin.call("POST", "/providers", json={"name": "local", "kind": "ollama", "retry_base_ms": 0})
    assert response.status_code == 400 and response.json()["error"]["param"] == "retry_base_ms"
    assert admin.ledger.find_provider("local") is None


# -- the CLI ----------------------------------------------------------------------------------


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "adapters.cli.main", *args, "--json"],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    assert "Traceback" not in done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout)


def test_the_cli_sets_updates_and_shows_timeouts_and_retries(tmp_path: Any) -> None:
    env = gateway_env(tmp_path / "data", None)
    assert cli(env, "init")[0] == 0
    status, added = cli(
        env,
        "providers",
        "add",
        "openai",
        "--kind",
        "openai",
        "--api-key-stdin",
        "--timeout-connect",
        "3",
        "--retries",
        "2",
        stdin="sk-policy-cli-000000000001",
    )
    assert status == 0 and {k: added[k] for k in DEFAULTS} == {**DEFAULTS, "timeout_connect": 3.0, "retries": 2}
    status, updated = cli(
        env,
        "providers",
        "update",
        "openai",
        "--timeout-total",
        "120",
        "--retry-base-ms",
        "50",
        "--timeout-connect",
        "default",
    )
    expected = {**DEFAULTS, "timeout_total": 120.0, "retries": 2, "retry_base_ms": 50}
    assert status == 0 and {k: updated[k] for k in DEFAULTS} == expected
    status, shown = cli(env, "providers", "show", "openai")
    assert status == 0 and {k: shown[k] for k in DEFAULTS} == expected
    status, listed = cli(env, "providers", "list")
    assert {k: listed["data"][0][k] for k in DEFAULTS} == expected
    status, refused = cli(env, "providers", "update", "openai", "--retries", "11")
    assert status == 1 and refused["error"]["code"] == "invalid_request" and "retries" in refused["error"]["message"]
    status, refused = cli(env, "providers", "update", "openai")
    assert status == 1 and "at least one" in refused["error"]["message"]
    assert cli(env, "providers", "show", "openai")[1]["retries"] == 2


def test_a_requests_deadline_is_the_providers_total_timeout_else_the_gateways(ledger: Ledger) -> None:
    register(ledger, UpstreamPolicy(timeout_total=45))
    router = build_services(Settings(upstream_timeout_seconds=7), ledger=ledger).router
    openai = Target("openai/gpt-4o", "gpt-4o", ledger.get_provider("openai"), None)
    other = Target("x/y", "y", Provider("x", "openai", None, None), None)
    assert router.total_seconds(router.route_with(openai, None)) == 45.0
    assert router.total_seconds(router.route_with(other, None)) == 7.0  # TALLYHUB_UPSTREAM_TIMEOUT_SECONDS
