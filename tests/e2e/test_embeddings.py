"""``/v1/embeddings`` through the gateway with the official SDK: billed per input token,
exactly, and refused clearly where the provider cannot embed or the input is wrong."""

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import Gateway, cli

KEY = "sk-embeddings-upstream-0001"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, FakeOpenAIUpstream, str]]:
    upstream = FakeOpenAIUpstream(api_key=KEY).start()
    gateway = Gateway.initialised(tmp_path_factory.mktemp("embeddings"))
    cli(
        gateway.env,
        "providers",
        "add",
        "openai",
        "--kind",
        "openai",
        "--base-url",
        upstream.base_url,
        "--api-key-stdin",
        stdin=KEY,
    )
    cli(
        gateway.env,
        "providers",
        "add",
        "claude",
        "--kind",
        "anthropic",
        "--base-url",
        "http://127.0.0.1:9",
        "--api-key-stdin",
        stdin="sk-ant-unused-0001",
    )
    cli(gateway.env, "prices", "set", "openai/text-embedding-3-small", "--input", "0.02", "--output", "0")
    cli(gateway.env, "prices", "set", "claude/claude-sonnet-4", "--input", "3", "--output", "15")
    cli(gateway.env, "accounts", "create", "acme", "--starter-credits", "10")
    key = cli(gateway.env, "keys", "issue", "acme")["key"]
    gateway.start()
    yield gateway, upstream, key
    gateway.stop()
    upstream.stop()


def test_embeddings_are_charged_exactly_per_input_token(setup) -> None:
    gateway, upstream, key = setup
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    before = gateway.balance("acme")["balance"]
    raw = client.embeddings.with_raw_response.create(
        model="openai/text-embedding-3-small", input=["the ledger", "never forgets"]
    )
    result = raw.parse()
    assert len(result.data) == 2 and len(result.data[0].embedding) > 0
    charge = result.usage.prompt_tokens * 20  # 0.02 credits per 1M tokens = 20 nanocredits per token
    assert int(raw.headers["x-tallyhub-charge-nanocredits"]) == charge > 0
    assert before - gateway.balance("acme")["balance"] == charge
    assert upstream.requests[-1].json["model"] == "text-embedding-3-small"


def test_a_provider_without_embeddings_is_a_clear_400_and_nothing_is_charged(setup) -> None:
    gateway, _, key = setup
    before = gateway.balance("acme")
    response = httpx.post(
        gateway.url + "/v1/embeddings",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "claude/claude-sonnet-4", "input": "hello"},
    )
    assert response.status_code == 400
    assert "does not offer embeddings" in response.json()["error"]["message"]
    after = gateway.balance("acme")
    assert (after["balance"], after["held"]) == (before["balance"], before["held"])


@pytest.mark.parametrize(
    "body",
    [
        {"model": "openai/text-embedding-3-small"},
        {"model": "openai/text-embedding-3-small", "input": 5},
        {"input": "x"},
        {"model": "openai/text-embedding-3-small", "input": []},
    ],
)
def test_bad_embeddings_input_is_400(setup, body) -> None:
    gateway, _, key = setup
    response = httpx.post(gateway.url + "/v1/embeddings", headers={"authorization": f"Bearer {key}"}, json=body)
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


def test_images_are_charged_per_image_and_per_token(setup) -> None:
    gateway, upstream, key = setup
    cli(gateway.env, "prices", "set", "openai/dall-e-3", "--input", "0", "--output", "0", "--per-image", "0.04")
    cli(gateway.env, "prices", "set", "openai/gpt-image-1", "--input", "5", "--output", "40", "--per-image", "0")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    before = gateway.balance("acme")["balance"]
    raw = client.images.with_raw_response.generate(model="openai/dall-e-3", prompt="a ledger at dawn", n=2)
    assert len(raw.parse().data) == 2
    assert int(raw.headers["x-tallyhub-charge-nanocredits"]) == 2 * 40_000_000
    raw = client.images.with_raw_response.generate(model="openai/gpt-image-1", prompt="a ledger at dusk")
    usage = raw.parse().usage
    assert (
        int(raw.headers["x-tallyhub-charge-nanocredits"]) == usage.input_tokens * 5_000 + usage.output_tokens * 40_000
    )
    assert (
        before - gateway.balance("acme")["balance"]
        == 2 * 40_000_000 + usage.input_tokens * 5_000 + usage.output_tokens * 40_000
    )


def test_images_need_a_prompt_and_a_sane_n(setup) -> None:
    gateway, _, key = setup
    headers = {"authorization": f"Bearer {key}"}
    for body in ({"model": "openai/dall-e-3"}, {"model": "openai/dall-e-3", "prompt": "x", "n": 0}):
        response = httpx.post(gateway.url + "/v1/images/generations", headers=headers, json=body)
        assert response.status_code == 400
