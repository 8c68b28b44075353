"""Rate limits through a real embedded gateway (SQLite): set, shown and cleared with
``tallyhub keys|accounts limits`` and the admin API; a 2-RPM key is answered 429
``rate_limit_exceeded`` with Retry-After and OpenAI's x-ratelimit-* headers on its third call,
recorded in the request log and charged nothing; ``--max-parallel 1`` refuses a second
stream while the first is open, and frees its slot when that stream ends."""

import threading
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.e2e.conftest import MODEL, configured_gateway
from tests.fakes.openai_scripts import Scripted
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import Gateway, cli

BODY = orjson.dumps({"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "hello"}]})
STREAM = orjson.dumps(
    {"model": MODEL, "max_tokens": 20, "stream": True, "messages": [{"role": "user", "content": "hello"}]}
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, FakeOpenAIUpstream, str]]:
    yield from configured_gateway(tmp_path_factory, "rate-limits", "1000")


def new_key(gateway: Gateway) -> tuple[str, str]:
    issued = cli(gateway.env, "keys", "issue", "acme", "--name", "limited")
    return issued["id"], issued["key"]


def chat(gateway: Gateway, key: str, body: bytes = BODY) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    return httpx.post(f"{gateway.url}/v1/chat/completions", content=body, headers=headers, timeout=30)


def test_limits_are_set_shown_and_cleared_by_the_cli_and_the_admin_api(setup) -> None:
    gateway, _, _ = setup
    key_id, _ = new_key(gateway)
    assert cli(gateway.env, "keys", "limits", key_id) == {
        "key_id": key_id,
        "rpm": None,
        "tpm": None,
        "max_parallel": None,
    }
    shown = cli(gateway.env, "keys", "limits", key_id, "--rpm", "60", "--tpm", "90000")
    assert shown == {"key_id": key_id, "rpm": 60, "tpm": 90000, "max_parallel": None}
    assert gateway.admin_json("GET", f"/keys/{key_id}/limits") == shown
    cleared = gateway.admin_json("PUT", f"/keys/{key_id}/limits", json={"tpm": 0, "max_parallel": 3})
    assert cleared == {"key_id": key_id, "rpm": 60, "tpm": None, "max_parallel": 3}  # rpm not given: kept
    assert cli(gateway.env, "keys", "limits", key_id)["max_parallel"] == 3

    account = cli(gateway.env, "accounts", "limits", "acme", "--max-parallel", "8")
    assert account["max_parallel"] == 8 and set(account) == {"account_id", "rpm", "tpm", "max_parallel"}
    assert gateway.admin_json("GET", "/accounts/acme/limits") == account
    assert gateway.admin_json("PUT", "/accounts/acme/limits", json={"max_parallel": None})["max_parallel"] is None
    assert cli(gateway.env, "accounts", "limits", "acme", "--max-parallel", "0")["max_parallel"] is None

    bad = gateway.admin("PUT", f"/keys/{key_id}/limits", json={"rpm": -1})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    refused = cli(gateway.env, "keys", "limits", key_id, "--rpm", str(10**9 + 1), check=False)
    assert refused["error"]["code"] == "invalid_request" and "rpm" in refused["error"]["message"]
    missing = gateway.admin("GET", "/keys/8c0d7c70-0000-4000-8000-000000000000/limits")
    assert missing.status_code == 404
    assert gateway.admin("GET", "/accounts/nobody/limits").status_code == 404


def test_a_two_rpm_key_is_refused_its_third_call_with_retry_after_and_the_headers(setup) -> None:
    gateway, _, _ = setup
    key_id, key = new_key(gateway)
    cli(gateway.env, "keys", "limits", key_id, "--rpm", "2")
    first, second = chat(gateway, key), chat(gateway, key)
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert (first.headers["x-ratelimit-remaining-requests"], second.headers["x-ratelimit-remaining-requests"]) == (
        "1",
        "0",
    )
    assert first.headers["x-ratelimit-reset-requests"] == "0s" and second.headers["x-ratelimit-reset-requests"] != "0s"
    assert "x-ratelimit-limit-tokens" not in first.headers  # no TPM limit on this key
    before = gateway.balance("acme")
    third = chat(gateway, key)
    assert third.status_code == 429
    error = third.json()["error"]
    assert (error["code"], error["type"]) == ("rate_limit_exceeded", "rate_limit_error")
    assert key_id in error["message"] and "acme" not in error["message"]
    assert 1 <= int(third.headers["retry-after"]) <= 60
    assert (third.headers["x-ratelimit-limit-requests"], third.headers["x-ratelimit-remaining-requests"]) == ("2", "0")
    assert third.headers["x-ratelimit-reset-requests"].endswith("s")
    assert gateway.balance("acme") == before  # nothing charged, nothing held
    message = httpx.post(  # the Anthropic ingress answers the same refusal in its own shape
        f"{gateway.url}/v1/messages",
        json={"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "hello"}]},
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        timeout=30,
    )
    assert message.status_code == 429 and message.json()["type"] == "error"
    assert int(message.headers["retry-after"]) >= 1 and message.headers["x-ratelimit-remaining-requests"] == "0"
    rows = gateway.admin_json("GET", "/requests")["data"]
    assert [(row["status"], row["error_code"], row["charge"]) for row in rows[:2]] == [
        (429, "rate_limit_exceeded", 0)
    ] * 2
    cli(gateway.env, "keys", "limits", key_id, "--rpm", "0")
    assert chat(gateway, key).status_code == 200  # cleared: no limit, no headers
    assert "x-ratelimit-limit-requests" not in chat(gateway, key).headers


def test_max_parallel_one_refuses_a_second_stream_while_the_first_is_open(setup) -> None:
    gateway, upstream, _ = setup
    key_id, key = new_key(gateway)
    cli(gateway.env, "keys", "limits", key_id, "--max-parallel", "1", "--tpm", "1000000")
    upstream.script(Scripted.chunk_delay(0.2))
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    first_chunk = threading.Event()
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", f"{gateway.url}/v1/chat/completions", content=STREAM, headers=headers) as first:
            assert first.status_code == 200
            assert first.headers["x-ratelimit-limit-tokens"] == "1000000"
            lines = first.iter_lines()  # kept: a dropped iterator would close the stream
            for line in lines:
                if line.startswith("data:"):
                    first_chunk.set()
                    break
            assert first_chunk.is_set()
            second = chat(gateway, key, STREAM)
            assert second.status_code == 429 and second.json()["error"]["code"] == "rate_limit_exceeded"
            assert int(second.headers["retry-after"]) >= 1
            rest = list(lines)  # the first stream runs to its end
            assert rest[-1] == "data: [DONE]" or "data: [DONE]" in rest
    third = chat(gateway, key)  # the first stream's slot was released when it ended
    assert third.status_code == 200


def test_every_answer_of_an_admitted_request_carries_the_headers_errors_included(setup) -> None:
    """Admitted, then failed upstream (502 relayed as the provider's 500), refused a hold (402),
    or answered on the Anthropic ingress: each answer has the x-ratelimit-* headers of its limits."""
    gateway, upstream, _ = setup
    key_id, key = new_key(gateway)
    cli(gateway.env, "keys", "limits", key_id, "--rpm", "50", "--tpm", "900000")
    upstream.script(Scripted.error(500))
    failed = chat(gateway, key)
    assert failed.status_code >= 500 and failed.json()["error"]["type"] == "upstream_error"
    assert failed.headers["x-ratelimit-limit-requests"] == "50"
    assert failed.headers["x-ratelimit-remaining-requests"] == "49"
    assert failed.headers["x-ratelimit-limit-tokens"] == "900000"

    upstream.script(Scripted.error(400, "bad model parameter"))
    rejected = httpx.post(
        f"{gateway.url}/v1/messages",
        json={"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "hello"}]},
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        timeout=30,
    )
    assert rejected.status_code == 400 and rejected.json()["type"] == "error"
    assert rejected.headers["x-ratelimit-remaining-requests"] == "48"

    cli(gateway.env, "accounts", "create", "pauper")
    issued = cli(gateway.env, "keys", "issue", "pauper", "--name", "broke")
    cli(gateway.env, "keys", "limits", issued["id"], "--rpm", "7")
    broke = chat(gateway, issued["key"])
    assert broke.status_code == 402 and broke.json()["error"]["code"] == "insufficient_credits"
    assert (broke.headers["x-ratelimit-limit-requests"], broke.headers["x-ratelimit-remaining-requests"]) == ("7", "6")
    assert "x-ratelimit-limit-tokens" not in broke.headers
