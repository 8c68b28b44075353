"""LiteLLM's SDK as a client of ``tallyhub serve``: it reads ``usage.cost`` as OpenRouter's
number (a float), so a stream's charge reaches it as a number with no serializer warning,
and the exact charge stays in ``cost_nanocredits`` / the receipt headers."""

import importlib
import json
import os
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from tests.e2e.conftest import INPUT_RATE, MODEL, OUTPUT_RATE, configured_gateway
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import Gateway

MESSAGES = [{"role": "user", "content": "Say hello to the ledger."}]
# LiteLLM's "openai/" prefix picks its OpenAI client; the rest is the gateway's model id.
LITELLM_MODEL = "openai/" + MODEL
Served = tuple[Gateway, FakeOpenAIUpstream, str]


@pytest.fixture(scope="module")
def litellm() -> ModuleType:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # its bundled prices, no download
    return importlib.import_module("litellm")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from configured_gateway(tmp_path_factory, "litellm", "100")


def call(litellm: ModuleType, served: Served, **extra: Any) -> Any:
    gateway, _, key = served
    return litellm.completion(
        model=LITELLM_MODEL, api_base=gateway.url + "/v1", api_key=key, messages=MESSAGES, max_retries=0, **extra
    )


def float_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "Expected `float`" in str(w.message)]


def test_a_stream_gives_litellm_the_charge_as_a_number_without_a_serializer_warning(
    litellm: ModuleType, served: Served
) -> None:
    gateway = served[0]
    before = gateway.balance("acme")["balance"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chunks = list(call(litellm, served, stream=True, stream_options={"include_usage": True}))
        built = litellm.stream_chunk_builder(chunks, messages=MESSAGES)
        dumped = [json.loads(chunk.model_dump_json()) for chunk in [*chunks, built]]
    usage = built.usage
    expected = usage.prompt_tokens * INPUT_RATE + usage.completion_tokens * OUTPUT_RATE
    assert expected > 0 and before - gateway.balance("acme")["balance"] == expected
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert type(usage.cost) is float and usage.cost == expected / 10**9
    assert dumped[-1]["usage"]["cost"] == expected / 10**9
    assert [d["usage"]["cost"] for d in dumped[:-1] if d.get("usage")] == [expected / 10**9]
    assert built._hidden_params["response_cost"] == expected / 10**9  # LiteLLM takes our figure as the cost
    assert float_warnings(caught) == []


def test_a_plain_answer_gives_litellm_the_exact_charge_in_its_response_headers(
    litellm: ModuleType, served: Served
) -> None:
    gateway = served[0]
    before = gateway.balance("acme")["balance"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        response = call(litellm, served)
        response.model_dump_json()
    usage = response.usage
    expected = usage.prompt_tokens * INPUT_RATE + usage.completion_tokens * OUTPUT_RATE
    headers = response._hidden_params["additional_headers"]
    assert response.choices[0].message.content
    assert headers["llm_provider-x-tallyhub-charge-nanocredits"] == str(expected)
    assert headers["llm_provider-x-tallyhub-usage-source"] == "provider"
    assert before - gateway.balance("acme")["balance"] == expected > 0
    assert float_warnings(caught) == []
