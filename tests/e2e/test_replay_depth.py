"""Issue 16's must-show, end to end on SQLite and PostgreSQL: a history holding every
pricing case, charged through ``serve`` from the providers' own usage JSON (fake OpenAI,
Anthropic and Gemini upstreams), replays under the same price file with a difference of
exactly 0 on every line, and ``tallyhub verify`` recomputes every cost.

The cases: OpenAI cached + reasoning tokens; service tier asked ``priority`` and answered
``default``, answered ``priority`` and ``flex``; a missing ``total_tokens``; Anthropic
5-minute cache writes (plain and streamed), a 1-hour/5-minute split, a total-only write
(flagged), web searches; Gemini above the 200k context tier with cached tokens and
thoughts, and exactly at it."""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import PgSchemas
from tests.fakes.anthropic_upstream import AnthropicScript, FakeAnthropicUpstream
from tests.fakes.gemini_upstream import FakeGeminiUpstream, GeminiScript
from tests.fakes.openai_scripts import Scripted
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import Gateway, cli

OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY = "sk-depth-openai-0001", "sk-ant-depth-0001", "AIzaSy-depth-gemini-0001"
GPT, CLAUDE, GEMINI = "openai/gpt-4o", "anthropic/claude-sonnet-4-5", "gemini/gemini-2.5-pro"
PRICES = {
    "models": {
        GPT: {
            "input": "1.25",
            "cached_input": "0.125",
            "output": "10",
            "per_request": "0.000001",
            "service_tiers": {"flex": {"input": "0.625", "output": "5"}, "priority": {"input": "2.5", "output": "20"}},
        },
        CLAUDE: {"input": "3", "cached_input": "0.3", "output": "15", "cache_write_1h": "6", "per_web_search": "0.01"},
        GEMINI: {
            "input": "1.25",
            "cached_input": "0.3125",
            "output": "10",
            "max_output_tokens": 65536,
            "context_tiers": [{"above_input_tokens": 200000, "input": "2.5", "cached_input": "0.625", "output": "15"}],
        },
    }
}
CASE_1_USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 200,
    "total_tokens": 1200,
    "prompt_tokens_details": {"cached_tokens": 800},
    "completion_tokens_details": {"reasoning_tokens": 150},
}


@dataclass
class Depth:
    gateway: Gateway
    client: openai.OpenAI
    price_file: str
    charges: list[int]
    ids: list[str]


def _prompt(size: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": "cached context " * (size // 15 + 1)}]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def depth(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pg_schemas: PgSchemas
) -> Iterator[Depth]:
    fakes = {
        "openai": FakeOpenAIUpstream(api_key=OPENAI_KEY).start(),
        "anthropic": FakeAnthropicUpstream(api_key=ANTHROPIC_KEY).start(),
        "gemini": FakeGeminiUpstream(api_key=GEMINI_KEY).start(),
    }
    data_dir: Path = tmp_path_factory.mktemp(f"depth-{request.param}")
    gateway = Gateway.initialised(data_dir, pg_schemas.new_url() if request.param == "postgres" else None)
    env = gateway.env
    for name, secret in (("openai", OPENAI_KEY), ("anthropic", ANTHROPIC_KEY), ("gemini", GEMINI_KEY)):
        cli(
            env,
            "providers",
            "add",
            name,
            "--kind",
            name,
            "--base-url",
            fakes[name].base_url,
            "--api-key-stdin",
            stdin=secret + "\n",
        )
    price_file = data_dir / "prices.json"
    price_file.write_text(json.dumps(PRICES))
    cli(env, "prices", "publish", str(price_file))
    cli(env, "accounts", "create", "acme")
    cli(env, "credits", "grant", "acme", "100000", "--reason", "e2e depth")
    key = cli(env, "keys", "issue", "acme", "--name", "depth")["key"]
    gateway.start()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    charges: list[int] = []
    ids: list[str] = []

    def call(fake: str, script: Any, model: str, messages: list[dict[str, str]], **extra: Any) -> None:
        fakes[fake].script(script)
        if extra.pop("stream", False):
            chunks = list(
                client.chat.completions.create(
                    model=model, messages=messages, stream=True, stream_options={"include_usage": True}, **extra
                )
            )
            charges.append(int(chunks[-1].usage.model_extra["cost_nanocredits"]))  # type: ignore[union-attr]
            return
        raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, **extra)
        charges.append(int(raw.headers["x-tallyhub-charge-nanocredits"]))
        ids.append(raw.headers["x-request-id"])

    hello = [{"role": "user", "content": "hello"}]
    call("openai", Scripted.raw_usage(CASE_1_USAGE), GPT, _prompt(1000))
    call("openai", Scripted.answered_tier("default"), GPT, hello, service_tier="priority")
    call("openai", Scripted.answered_tier("priority"), GPT, hello, service_tier="priority")
    call("openai", Scripted.answered_tier("flex"), GPT, hello, service_tier="flex")
    call("openai", Scripted.raw_usage({"prompt_tokens": 12, "completion_tokens": 7}), GPT, hello)
    big = _prompt(165_000)
    case_2 = dict(input_tokens=6, ephemeral_5m_input_tokens=159_217, cache_read_input_tokens=0, output_tokens=2745)
    call("anthropic", AnthropicScript.usage(**case_2), CLAUDE, big)
    call("anthropic", AnthropicScript.usage(**case_2), CLAUDE, big, stream=True)
    split = dict(input_tokens=10, ephemeral_1h_input_tokens=60_000, ephemeral_5m_input_tokens=40_000, output_tokens=5)
    call("anthropic", AnthropicScript.usage(**split), CLAUDE, _prompt(100_000))
    total_only = dict(input_tokens=10, cache_creation_input_tokens=5000, cache_creation=False, output_tokens=5)
    call("anthropic", AnthropicScript.usage(**total_only), CLAUDE, _prompt(5000))
    call("anthropic", AnthropicScript.usage(input_tokens=20, output_tokens=30, web_search_requests=3), CLAUDE, hello)
    gemini_case = dict(
        promptTokenCount=250_000, cachedContentTokenCount=100_000, candidatesTokenCount=500, thoughtsTokenCount=8000
    )
    call("gemini", GeminiScript.usage(**gemini_case, totalTokenCount=258_500), GEMINI, _prompt(250_000))
    call(
        "gemini",
        GeminiScript.usage(promptTokenCount=200_000, candidatesTokenCount=10, totalTokenCount=200_010),
        GEMINI,
        _prompt(200_000),
    )
    yield Depth(gateway, client, str(price_file), charges, ids)
    gateway.stop()
    for fake in fakes.values():
        fake.stop()


def test_each_case_is_charged_its_golden_amount(depth: Depth) -> None:
    c = depth.charges
    assert c[0] == (200 * 1_250 + 800 * 125 + 200 * 10_000) + 1000  # case 1, plus the per-request fee
    assert c[5] == c[6] == 638_256_750  # case 2, plain and streamed: 6 x 3 + 159,217 x 3.75 + 2,745 x 15
    assert c[7] == 60_000 * 6_000 + 40_000 * 3_750 + 10 * 3_000 + 5 * 15_000  # case 3: each part at its rate
    assert c[8] == 5000 * 3_750 + 10 * 3_000 + 5 * 15_000  # a total-only write: priced as 5-minute
    assert c[9] == 20 * 3_000 + 30 * 15_000 + 3 * 10_000_000  # three web searches
    assert c[10] == 565_000_000  # case 5: the >200k tier for every class, thoughts as output
    assert c[11] == 200_000 * 1_250 + 10 * 10_000  # exactly at the threshold: the lower tier
    assert c[2] > c[1] > c[3]  # priority > default (asked priority, answered default) > flex
    flags = {
        request_id: depth.gateway.admin_json("GET", f"/requests/{request_id}")["usage"].get("flags")
        for request_id in depth.ids
    }
    assert flags[depth.ids[7]] == ["cache_write_ttl_assumed"]
    assert flags[depth.ids[4]] == ["total_derived"]


def test_the_history_replays_under_the_same_prices_with_exactly_zero_difference_and_verifies(depth: Depth) -> None:
    env = depth.gateway.env
    report = cli(env, "replay", "--prices", depth.price_file)
    assert report["charges"] == len(depth.charges) == 12
    assert [line["difference"] for line in report["lines"]] == [0, 0, 0]
    assert report["totals"]["difference"] == 0 and report["totals"]["old"] == sum(depth.charges)
    verified = cli(env, "verify", check=False)
    assert verified["ok"], verified["problems"]
