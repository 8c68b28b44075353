"""The official openai SDK, unchanged, against ``tallyhub serve`` on loopback and a fake
OpenAI upstream — on SQLite and on PostgreSQL."""

import asyncio

import openai
import pytest

from domain.money import format_credits
from tests.e2e.conftest import INPUT_RATE, MODEL, OUTPUT_RATE, UPSTREAM_KEY, Served

MESSAGES = [{"role": "user", "content": "Say hello to the ledger."}]


def client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.gateway.url + "/v1", api_key=served.api_key, max_retries=0)


def test_sync_completion_is_charged_exactly_and_the_balance_moves_by_the_charge(served: Served) -> None:
    before = served.gateway.balance(served.account)["balance"]
    raw = client(served).chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    completion = raw.parse()
    usage = completion.usage
    expected = usage.prompt_tokens * INPUT_RATE + usage.completion_tokens * OUTPUT_RATE
    assert completion.choices[0].message.content
    assert int(raw.headers["x-tallyhub-charge-nanocredits"]) == expected
    assert raw.headers["x-tallyhub-price-book-version"] == "1"
    assert raw.headers["x-request-id"]
    after = served.gateway.balance(served.account)
    assert before - after["balance"] == expected
    assert after["held"] == 0 and after["available"] == after["balance"]


def test_the_upstream_sees_the_operator_credential_and_the_upstream_model_name(served: Served) -> None:
    served.upstream.reset()
    client(served).chat.completions.create(model=MODEL, messages=MESSAGES, extra_body={"x_custom_field": 1})
    seen = served.upstream.requests[-1]
    assert seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert seen.json["model"] == "gpt-4o-mini"
    assert seen.json["x_custom_field"] == 1  # unknown fields pass through


def test_async_completion_is_charged_exactly(served: Served) -> None:
    async def call() -> tuple[int, int]:
        async_client = openai.AsyncOpenAI(base_url=served.gateway.url + "/v1", api_key=served.api_key, max_retries=0)
        raw = await async_client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
        usage = raw.parse().usage
        await async_client.close()
        return int(
            raw.headers["x-tallyhub-charge-nanocredits"]
        ), usage.prompt_tokens * INPUT_RATE + usage.completion_tokens * OUTPUT_RATE

    charged, expected = asyncio.run(call())
    assert charged == expected > 0


def test_streaming_with_include_usage_carries_the_charge_in_the_final_chunk(served: Served) -> None:
    before = served.gateway.balance(served.account)["balance"]
    stream = client(served).chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = chunks[-1]
    assert text and final.choices == []
    usage = final.usage
    expected = usage.prompt_tokens * INPUT_RATE + usage.completion_tokens * OUTPUT_RATE
    extra = usage.model_extra
    assert extra["cost_nanocredits"] == expected
    assert extra["cost_decimal"] == format_credits(expected)
    assert type(extra["cost"]) is float and extra["cost"] == expected / 10**9  # OpenRouter's usage.cost: a number
    assert extra["price_book_version"] == 1 and extra["usage_source"] == "provider"
    assert before - served.gateway.balance(served.account)["balance"] == expected


def test_streaming_without_include_usage_still_gets_the_charge_on_the_finish_chunk(served: Served) -> None:
    chunks = list(client(served).chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert all(c.choices for c in chunks)  # code reading choices[0] never meets an empty chunk
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage.model_extra["cost_nanocredits"] > 0


def test_models_lists_what_the_caller_may_use(served: Served) -> None:
    assert [m.id for m in client(served).models.list()] == [MODEL]


def test_a_bad_key_gets_401_in_openai_shape(served: Served) -> None:
    bad = openai.OpenAI(base_url=served.gateway.url + "/v1", api_key="thk_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert caught.value.status_code == 401
    assert caught.value.body["code"] == "invalid_api_key"


def test_an_unknown_model_gets_404_model_not_found(served: Served) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(served).chat.completions.create(model="openai/no-such-model", messages=MESSAGES)
    assert caught.value.body["code"] == "model_not_found"
