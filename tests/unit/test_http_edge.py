"""The HTTP edge, in process (the FastAPI app over an in-memory ledger): bodies are bounded
before anything reads them, the admin key is checked before an admin body is read, time
parameters and webhook headers that used to raise answer 400 naming what is wrong, any
unexpected exception is a JSON 500 that says nothing, and an address that keeps failing
to authenticate is refused 429 for a while."""

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from adapters.bootstrap import build_services, in_memory_ledger
from adapters.crypto.aes_gcm import generate_master_key
from adapters.crypto.key_ring import KeyRing
from adapters.http.app import create_app
from adapters.http.payments import sign
from adapters.settings import Settings
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.ledger import Ledger
from tests.fakes.clock import FakeClock

ADMIN_LIMIT = 64 * 1024
BODY_LIMIT = 256 * 1024
CHUNK = 16 * 1024
HUGE = 200 * 1024 * 1024
WEBHOOK_SECRET = "whsec-edge-tests-0123456789abcdef"


@dataclass
class Edge:
    app: FastAPI
    client: TestClient
    ledger: Ledger
    admin_key: str
    user_key: str

    def from_address(self, address: str) -> TestClient:
        return TestClient(self.app, client=(address, 40000), raise_server_exceptions=False)


@pytest.fixture
def edge() -> Iterator[Edge]:
    ring = KeyRing.parse(f"k1:{generate_master_key()}", source="TEST")
    ledger = in_memory_ledger(master_key=ring, clock=FakeClock())
    admin_key = ledger.initialise()
    Accounts(ledger).create_account("acme", starter_credits=5 * 10**9)
    user_key = ApiKeys(ledger).issue_api_key("acme").plaintext
    settings = replace(
        Settings(),
        max_body_bytes=BODY_LIMIT,
        admin_max_body_bytes=ADMIN_LIMIT,
        auth_failure_limit=3,
        payments_webhook_secret=WEBHOOK_SECRET,
    )
    services = build_services(settings, ledger=ledger)
    app = create_app(services, run_projections=False)
    yield Edge(app, TestClient(app, raise_server_exceptions=False), ledger, admin_key, user_key)
    ledger.close()


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


# --- bodies bounded before anything else --------------------------------------------


@dataclass
class Sent:
    status: int
    body: bytes
    pulled: int  # body bytes the app took from the client


def call(app: FastAPI, method: str, path: str, headers: dict[str, str], body_size: int) -> Sent:
    """Drive the ASGI app directly with a client that would send ``body_size`` bytes in
    chunks, counting how many the app actually pulled."""
    pulled = 0
    remaining = body_size
    out: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        nonlocal pulled, remaining
        chunk = min(CHUNK, remaining)
        remaining -= chunk
        pulled += chunk
        return {"type": "http.request", "body": b"x" * chunk, "more_body": remaining > 0}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        elif message["type"] == "http.response.body":
            out["body"] += message.get("body", b"")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "scheme": "http",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("10.0.0.9", 5555),
        "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))
    return Sent(out["status"], out["body"], pulled)


def test_an_admin_body_declaring_200_mb_is_413_before_a_byte_is_read_or_the_key_checked(edge: Edge) -> None:
    for headers in ({"content-length": str(HUGE)}, {"content-length": str(HUGE), **bearer(edge.admin_key)}):
        sent = call(edge.app, "POST", "/admin/v1/accounts", headers, HUGE)
        assert sent.status == 413 and sent.pulled == 0
        assert orjson.loads(sent.body)["error"]["code"] == "request_too_large"


def test_an_unauthenticated_chunked_admin_body_is_401_before_a_byte_is_read(edge: Edge) -> None:
    for headers in ({}, bearer("tha_wrong"), bearer(edge.user_key)):
        sent = call(edge.app, "POST", "/admin/v1/accounts", headers, HUGE)
        assert sent.status == 401 and sent.pulled == 0
        assert orjson.loads(sent.body)["error"]["type"] == "authentication_error"


def test_an_admin_chunked_body_is_cut_off_as_soon_as_it_passes_the_admin_limit(edge: Edge) -> None:
    sent = call(edge.app, "POST", "/admin/v1/accounts", bearer(edge.admin_key), HUGE)
    assert sent.status == 413 and orjson.loads(sent.body)["error"]["code"] == "request_too_large"
    assert ADMIN_LIMIT < sent.pulled <= ADMIN_LIMIT + CHUNK


def test_an_admin_body_within_the_limit_still_works(edge: Edge) -> None:
    response = edge.client.post("/admin/v1/accounts", headers=bearer(edge.admin_key), json={"name": "beta"})
    assert response.status_code == 201, response.text
    publish = edge.client.post(
        "/admin/v1/prices/versions",
        headers=bearer(edge.admin_key),
        content=b'{"prices": {}}' + b" " * (ADMIN_LIMIT - 100),
    )
    assert publish.status_code != 413


@pytest.mark.parametrize("path", ["/v1/me", "/v1/images/generations", "/v1/nothing-here"])
def test_other_routes_cut_a_chunked_body_off_at_the_body_limit(edge: Edge, path: str) -> None:
    sent = call(edge.app, "POST", path, bearer(edge.user_key), HUGE)
    assert sent.status == 413 and BODY_LIMIT < sent.pulled <= BODY_LIMIT + CHUNK
    assert call(edge.app, "POST", path, {"content-length": str(HUGE)}, HUGE).pulled == 0


def test_the_webhook_keeps_its_1_mib_limit_and_needs_no_admin_key(edge: Edge) -> None:
    sent = call(edge.app, "POST", "/admin/v1/payments/webhook", {}, HUGE)
    assert sent.status == 413 and 1024 * 1024 < sent.pulled <= 1024 * 1024 + CHUNK
    body = b'{"id": "evt_1", "type": "other.event", "data": {}}'
    response = edge.client.post(
        "/admin/v1/payments/webhook",
        content=body,
        headers={"tallyhub-signature": sign(WEBHOOK_SECRET, body, int(time.time()))},
    )
    assert response.status_code == 200 and response.json()["ignored"] is True


# --- errors that were plain-text 500s --------------------------------------------------


@pytest.mark.parametrize(
    "header",
    ["t=" + "9" * 400 + ",v1=00", "t=" + "1" * 5000, "t=１２３,v1=00", "t=1700000000,v1=\u00e9\u00e9", "v1=00", ""],
)
def test_a_malformed_webhook_signature_header_is_400_invalid_signature(edge: Edge, header: str) -> None:
    response = edge.client.post(
        "/admin/v1/payments/webhook", content=b"{}", headers={"tallyhub-signature": header.encode("utf-8")}
    )
    assert response.status_code == 400, response.text
    assert error(response)["code"] == "invalid_signature"


OUT_OF_RANGE = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]


@pytest.mark.parametrize("value", OUT_OF_RANGE + ["yesterday"])
def test_a_time_window_parameter_out_of_range_is_400_naming_it(edge: Edge, value: str) -> None:
    user, admin = bearer(edge.user_key), bearer(edge.admin_key)
    cases = [
        ("GET", "/v1/me/usage", "since", user),
        ("GET", "/v1/me/usage", "until", user),
        ("GET", "/admin/v1/accounts/acme/statement", "from", admin),
        ("GET", "/admin/v1/accounts/acme/statement", "to", admin),
        ("POST", "/admin/v1/exports", "from", admin),
        ("POST", "/admin/v1/exports", "to", admin),
        ("GET", "/admin/v1/reconciliation", "from", admin),
        ("GET", "/admin/v1/reconciliation", "to", admin),
        ("POST", "/admin/v1/replays", "from", admin),
        ("POST", "/admin/v1/replays", "to", admin),
    ]
    for method, path, param, headers in cases:
        params = {param: value, **({"kind": "ledger"} if path.endswith("exports") else {})}
        response = edge.client.request(method, path, params=params, headers=headers, content=b"{}")
        assert response.status_code == 400, (path, param, response.text)
        assert error(response)["param"] == param and error(response)["type"] == "invalid_request_error"


@pytest.mark.parametrize("value", OUT_OF_RANGE)
def test_an_expiry_in_a_body_out_of_range_in_utc_is_400_naming_it(edge: Edge, value: str) -> None:
    for path, body in (
        ("/admin/v1/accounts/acme/grants", {"amount": "1"}),
        ("/admin/v1/accounts/acme/keys", {}),
        ("/admin/v1/keys", {"account": "acme"}),
    ):
        response = edge.client.post(path, headers=bearer(edge.admin_key), json={**body, "expires_at": value})
        assert response.status_code == 400, (path, response.text)
        assert error(response)["param"] == "expires_at"


def test_nul_characters_and_impossible_statuses_in_queries_are_400(edge: Edge) -> None:
    for path, headers in (
        ("/v1/me/requests?model=gpt%00x", bearer(edge.user_key)),
        ("/admin/v1/requests?model=%00", bearer(edge.admin_key)),
        ("/admin/v1/accounts/ac%00me/balance", bearer(edge.admin_key)),
        ("/v1/me/requests?status=99999999999999999999", bearer(edge.user_key)),
    ):
        response = edge.client.get(path, headers=headers)
        assert response.status_code == 400, (path, response.text)
        assert error(response)["type"] == "invalid_request_error"


def test_the_earliest_and_latest_utc_instants_are_still_accepted(edge: Edge) -> None:
    response = edge.client.get(
        "/v1/me/usage",
        headers=bearer(edge.user_key),
        params={"since": "0001-01-01T00:00:00Z", "until": "9999-12-31T23:59:59Z"},
    )
    assert response.status_code == 200, response.text
    statement = edge.client.get(
        "/admin/v1/accounts/acme/statement",
        headers=bearer(edge.admin_key),
        params={"from": "0001-01-01T00:00:00+00:00"},
    )
    assert statement.status_code == 200, statement.text


def test_an_unexpected_exception_is_a_json_500_that_says_nothing(edge: Edge, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("db password=hunter2 at line 7")

    monkeypatch.setattr(edge.ledger, "list_providers", broken)
    monkeypatch.setattr(edge.ledger, "recent_price_book", broken)
    chat = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    for response in (
        edge.client.get("/admin/v1/providers", headers=bearer(edge.admin_key)),
        edge.client.post("/v1/chat/completions", headers=bearer(edge.user_key), json=chat),
    ):
        assert response.status_code == 500 and response.headers["content-type"] == "application/json"
        assert error(response) == {
            "message": "internal error",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
        assert "hunter2" not in response.text and "Traceback" not in response.text
        assert response.headers["x-request-id"]


# --- failed authentication is throttled per address --------------------------------


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_that_keeps_failing_to_authenticate_is_refused_429_for_the_window(edge: Edge) -> None:
    ticks = Ticks()
    edge.app.state.auth_throttle.clock = ticks
    attacker, neighbour = edge.from_address("203.0.113.7"), edge.from_address("203.0.113.8")
    chat = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    assert attacker.get("/v1/me", headers=bearer("thk_wrong")).status_code == 401  # a user key, FastAPI route
    assert attacker.post("/v1/chat/completions", headers=bearer("thk_wrong"), json=chat).status_code == 401  # hot route
    assert attacker.get("/admin/v1/accounts", headers=bearer("tha_wrong")).status_code == 401  # the admin key
    ticks.now += 30
    for response in (
        attacker.get("/v1/me", headers=bearer(edge.user_key)),
        attacker.post("/v1/chat/completions", headers=bearer(edge.user_key), json=chat),
        attacker.get("/admin/v1/accounts", headers=bearer(edge.admin_key)),
    ):
        assert response.status_code == 429, response.text
        assert error(response)["code"] == "too_many_failed_auth" and response.headers["retry-after"] == "30"
    anthropic = attacker.post("/v1/messages", headers={"x-api-key": edge.user_key}, json={**chat, "max_tokens": 9})
    assert anthropic.status_code == 429 and anthropic.headers["retry-after"] == "30"
    assert anthropic.json()["type"] == "error" and anthropic.json()["error"]["type"] == "rate_limit_error"
    assert neighbour.get("/v1/me", headers=bearer(edge.user_key)).status_code == 200
    assert neighbour.get("/admin/v1/accounts", headers=bearer(edge.admin_key)).status_code == 200
    ticks.now += 30  # the first failure is a window old: the address may try again
    assert attacker.get("/v1/me", headers=bearer(edge.user_key)).status_code == 200
    assert attacker.get("/admin/v1/accounts", headers=bearer(edge.admin_key)).status_code == 200


def test_successful_authentication_is_never_counted(edge: Edge) -> None:
    client = edge.from_address("198.51.100.1")
    for _ in range(10):
        assert client.get("/v1/me", headers=bearer(edge.user_key)).status_code == 200
        assert client.get("/admin/v1/accounts", headers=bearer(edge.admin_key)).status_code == 200
    assert client.get("/v1/me", headers=bearer("thk_wrong")).status_code == 401
    assert client.get("/v1/me", headers=bearer(edge.user_key)).status_code == 200
