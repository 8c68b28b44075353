"""One key's rate limit, one key's spend cap and one account's credit hold on every API
surface alike: ``/v1/chat/completions``, ``/v1/responses`` and ``/v1/messages`` each refuse
the caller over its limit, in its own error shape, with nothing charged and nothing sent
upstream — no surface is a way around a limit the others keep."""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import MODEL, configured_gateway
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import Gateway, cli

SURFACES = ("/v1/chat/completions", "/v1/responses", "/v1/messages")
PROMPT = "hello"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, FakeOpenAIUpstream, str]]:
    yield from configured_gateway(tmp_path_factory, "limits-across-surfaces", "1000")


def body_for(surface: str) -> dict[str, Any]:
    if surface == "/v1/responses":
        return {"model": MODEL, "input": PROMPT, "max_output_tokens": 20}
    return {"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": PROMPT}]}


def call(gateway: Gateway, surface: str, key: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    if surface == "/v1/messages":
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    return httpx.post(gateway.url + surface, json=body_for(surface), headers=headers, timeout=30)


def new_key(gateway: Gateway, account: str = "acme") -> tuple[str, str]:
    issued = cli(gateway.env, "keys", "issue", account, "--name", "limited")
    return issued["id"], issued["key"]


def refused_as(response: httpx.Response, surface: str) -> tuple[int, str]:
    """(status, the error's kind in the surface's own shape: OpenAI's code, Anthropic's type)."""
    document = response.json()
    if surface == "/v1/messages":
        assert document["type"] == "error" and set(document["error"]) == {"type", "message"}
        return response.status_code, document["error"]["type"]
    assert set(document["error"]) == {"message", "type", "param", "code"}
    return response.status_code, document["error"]["code"]


def balance(gateway: Gateway, account: str = "acme") -> int:
    value: int = gateway.balance(account)["balance"]
    return value


def test_a_key_over_its_rate_limit_is_refused_on_every_surface_and_charged_nothing(setup) -> None:
    gateway, upstream, _ = setup
    key_id, key = new_key(gateway)
    cli(gateway.env, "keys", "limits", key_id, "--rpm", "1")
    assert call(gateway, "/v1/responses", key).status_code == 200  # the one request of its minute
    upstream.reset()
    before = balance(gateway)
    expected = {"/v1/chat/completions": "rate_limit_exceeded", "/v1/responses": "rate_limit_exceeded"}
    for surface in SURFACES:
        refused = call(gateway, surface, key)
        assert refused_as(refused, surface) == (429, expected.get(surface, "rate_limit_error"))
        assert int(refused.headers["retry-after"]) >= 1
    assert balance(gateway) == before and upstream.requests == []


def test_a_key_at_its_spend_cap_is_refused_on_every_surface_and_charged_nothing(setup) -> None:
    gateway, _, _ = setup
    key_id, key = new_key(gateway)
    cli(gateway.env, "accounts", "caps", "acme", "--key", key_id, "--day", "0.000001")  # below any hold
    before = balance(gateway)
    expected = {"/v1/chat/completions": "spend_cap_reached", "/v1/responses": "spend_cap_reached"}
    for surface in SURFACES:
        refused = call(gateway, surface, key)
        assert refused_as(refused, surface) == (429, expected.get(surface, "rate_limit_error"))
        assert "retry-after" in refused.headers
    # The cap is checked as the hold is made durable, which the upstream call may start
    # alongside (application/billing.py confirm_hold): a call so started is cancelled, and
    # whether one reached the fake is timing, so only the charge is asserted here.
    assert balance(gateway) == before


def test_an_account_out_of_credit_is_refused_402_on_every_surface_and_charged_nothing(setup) -> None:
    gateway, upstream, _ = setup
    cli(gateway.env, "accounts", "create", "broke")
    _, key = new_key(gateway, "broke")
    upstream.reset()
    expected = {"/v1/chat/completions": "insufficient_credits", "/v1/responses": "insufficient_credits"}
    for surface in SURFACES:
        refused = call(gateway, surface, key)
        assert refused_as(refused, surface) == (402, expected.get(surface, "billing_error"))
    assert balance(gateway, "broke") == 0 and upstream.requests == []


def test_every_surface_answers_and_charges_the_same_account_when_within_its_limits(setup) -> None:
    gateway, _, key = setup
    before = balance(gateway)
    charges = []
    for surface in SURFACES:
        answered = call(gateway, surface, key)
        assert answered.status_code == 200, answered.text
        charges.append(int(answered.headers["x-tallyhub-charge-nanocredits"]))
    assert all(charge > 0 for charge in charges) and before - balance(gateway) == sum(charges)
