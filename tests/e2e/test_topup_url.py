"""``TALLYHUB_TOPUP_URL``: with it set, every 402 ``insufficient_credits`` on every API
surface (chat, responses, messages, embeddings, images) carries the account's top-up link,
in the error's message and in a ``topup_url`` field of the error object (OpenAI's shape and
Anthropic's alike); unset, the answers are exactly as before. Real servers on loopback."""

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import MODEL, UPSTREAM_KEY
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import Gateway, cli

TEMPLATE = "https://pay.example/top-up?account={account}&src=tallyhub"
EMBEDDING = "openai/text-embedding-3-small"
IMAGE = "openai/dall-e-3"
Served = tuple[Gateway, str, str]  # the gateway, the key of the account without credit, its id
SURFACES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]},
    "/v1/responses": {"model": MODEL, "input": "hi", "max_output_tokens": 20},
    "/v1/messages": {"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]},
    "/v1/embeddings": {"model": EMBEDDING, "input": ["the ledger never forgets"]},
    "/v1/images/generations": {"model": IMAGE, "prompt": "a ledger at dawn", "n": 1},
}


def serve(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAIUpstream, name: str, **extra: str
) -> tuple[Gateway, str, str]:
    """A gateway whose account ``broke`` has no credit: (gateway, its key, its account id)."""
    gateway = Gateway.initialised(tmp_path_factory.mktemp(name), **extra)
    env = gateway.env
    cli(env, "providers", "add", "openai", "--kind", "openai", "--base-url", upstream.base_url, "--api-key-stdin",
        stdin=UPSTREAM_KEY + "\n")  # fmt: skip
    cli(env, "prices", "set", MODEL, "--input", "2", "--output", "8")
    cli(env, "prices", "set", EMBEDDING, "--input", "0.02", "--output", "0")
    cli(env, "prices", "set", IMAGE, "--input", "0", "--output", "0", "--per-image", "0.04")
    account_id = cli(env, "accounts", "create", "broke")["id"]
    key = cli(env, "keys", "issue", "broke", "--name", "e2e")["key"]
    gateway.start()
    return gateway, key, account_id


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIUpstream]:
    fake = FakeOpenAIUpstream(api_key=UPSTREAM_KEY).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def with_topup(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAIUpstream
) -> Iterator[tuple[Gateway, str, str]]:
    served = serve(tmp_path_factory, upstream, "topup-set", TALLYHUB_TOPUP_URL=TEMPLATE)
    yield served
    served[0].stop()


@pytest.fixture(scope="module")
def without_topup(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAIUpstream
) -> Iterator[tuple[Gateway, str, str]]:
    served = serve(tmp_path_factory, upstream, "topup-unset")
    yield served
    served[0].stop()


def call(gateway: Gateway, surface: str, key: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    if surface == "/v1/messages":
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    return httpx.post(gateway.url + surface, json=SURFACES[surface], headers=headers, timeout=30)


@pytest.mark.parametrize("surface", list(SURFACES))
def test_every_402_carries_the_top_up_link_when_it_is_set(
    with_topup: Served, upstream: FakeOpenAIUpstream, surface: str
) -> None:
    gateway, key, account_id = with_topup
    link = f"https://pay.example/top-up?account={account_id}&src=tallyhub"
    upstream.reset()
    refused = call(gateway, surface, key)
    assert refused.status_code == 402, refused.text
    error = refused.json()["error"]
    if surface == "/v1/messages":  # Anthropic's shape, with the link beside its type and message
        assert refused.json()["type"] == "error"
        assert set(error) == {"type", "message", "topup_url"} and error["type"] == "billing_error"
    else:
        assert set(error) == {"message", "type", "param", "code", "topup_url"}
        assert (error["type"], error["code"]) == ("insufficient_credits", "insufficient_credits")
    assert error["topup_url"] == link
    assert error["message"].startswith("insufficient credits: ") and error["message"].endswith(f"; top up at {link}")
    assert upstream.requests == []


@pytest.mark.parametrize("surface", list(SURFACES))
def test_without_the_setting_a_402_is_answered_as_before(without_topup: Served, surface: str) -> None:
    gateway, key, _ = without_topup
    refused = call(gateway, surface, key)
    assert refused.status_code == 402, refused.text
    error = refused.json()["error"]
    expected_fields = {"type", "message"} if surface == "/v1/messages" else {"message", "type", "param", "code"}
    assert set(error) == expected_fields
    assert "top up" not in error["message"]


def test_the_openai_sdk_sees_the_link_in_its_error(with_topup: Served) -> None:
    gateway, key, account_id = with_topup
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=20)
    assert raised.value.status_code == 402
    assert raised.value.body["topup_url"] == TEMPLATE.replace("{account}", account_id)  # type: ignore[index]
