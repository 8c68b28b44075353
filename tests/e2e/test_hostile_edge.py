"""The real server's edge against hostile input over a socket: a huge declared or chunked
admin body is refused before it is read (the server stays up and small), broken webhook
headers and out-of-range time windows are JSON 400s, and an address that keeps failing
to authenticate gets 429 while another address is served."""

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapters.http.payments import sign
from tests.support.gateway import Gateway, cli

WEBHOOK_SECRET = "whsec-e2e-edge-0123456789abcdef"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data_dir: Path = tmp_path_factory.mktemp("edge")
    gw = Gateway.initialised(data_dir, TALLYHUB_PAYMENTS_WEBHOOK_SECRET=WEBHOOK_SECRET, TALLYHUB_AUTH_FAILURE_LIMIT="5")
    cli(gw.env, "accounts", "create", "acme")
    gw.start()
    yield gw
    gw.stop()


def raw_exchange(port: int, head: bytes, first_chunk: bytes = b"") -> bytes:
    """Send ``head`` (and maybe one body chunk), then read whatever the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + first_chunk)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        return answer


def test_a_200_mb_unauthenticated_admin_body_is_refused_without_being_sent(gateway: Gateway) -> None:
    declared = (
        b"POST /admin/v1/accounts HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 209715200\r\n\r\n"
    )
    answer = raw_exchange(gateway.port, declared, b'{"name": "')
    assert answer.startswith(b"HTTP/1.1 413") and b'"code":"request_too_large"' in answer
    chunked = (
        b"POST /admin/v1/accounts HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    answer = raw_exchange(gateway.port, chunked, b"10000\r\n" + b"x" * 0x10000 + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 401") and b'"type":"authentication_error"' in answer
    assert gateway.admin("GET", "/accounts").status_code == 200  # still serving


def test_a_webhook_timestamp_of_400_digits_is_a_json_400(gateway: Gateway) -> None:
    body = b'{"id": "evt_1", "type": "payment.succeeded", "data": {}}'
    bad = httpx.post(
        f"{gateway.url}/admin/v1/payments/webhook",
        content=body,
        timeout=10,
        headers={"tallyhub-signature": "t=" + "9" * 400 + ",v1=00"},
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_signature"
    good = sign(WEBHOOK_SECRET, b'{"id": "evt_2", "type": "other", "data": {}}', int(time.time()))
    ok = httpx.post(
        f"{gateway.url}/admin/v1/payments/webhook",
        content=b'{"id": "evt_2", "type": "other", "data": {}}',
        headers={"tallyhub-signature": good},
        timeout=10,
    )
    assert ok.status_code == 200 and ok.json()["ignored"] is True


def test_a_time_window_that_underflows_in_utc_is_a_json_400_naming_it(gateway: Gateway) -> None:
    response = gateway.admin("GET", "/accounts/acme/statement", params={"from": "0001-01-01T00:00:00+14:00"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "from"


def test_repeated_failed_authentication_gets_429_and_another_address_is_served(gateway: Gateway) -> None:
    attacker = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.3"), timeout=10)
    neighbour = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.4"), timeout=10)
    admin = {"authorization": f"Bearer {gateway.admin_key}"}
    for _ in range(5):
        assert (
            attacker.get(f"{gateway.url}/v1/models", headers={"authorization": "Bearer thk_guess"}).status_code == 401
        )
    refused = attacker.get(f"{gateway.url}/admin/v1/accounts", headers=admin)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_failed_auth"
    assert 0 < int(refused.headers["retry-after"]) <= 60
    assert neighbour.get(f"{gateway.url}/admin/v1/accounts", headers=admin).status_code == 200
