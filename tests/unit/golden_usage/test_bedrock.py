"""Bedrock's Converse API: case 2 and 3 as Bedrock reports them (``inputTokens`` without
the cache; ``cacheReadInputTokens``, ``cacheWriteInputTokens`` and, newer,
``cacheDetails`` — the writes per TTL, ``[{"ttl": "1h", "inputTokens": n}, …]``).

Shape: https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_TokenUsage.html"""

from dataclasses import replace
from typing import Any

import orjson

from adapters.providers.bedrock_response import ConverseStreamTranslator, completion_document
from adapters.providers.openai_family import usage_from_openai_family
from domain.pricing import price_usage
from domain.usage import Usage
from tests.unit.golden_usage.prices import PRICE

BASE_ONLY = replace(PRICE, context_tiers=())


def answer(usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": "Done."}]}},
        "stopReason": "end_turn",
        "usage": usage,
        "metrics": {"latencyMs": 812},
    }


def plain(usage: dict[str, Any]) -> Usage:
    document = orjson.loads(completion_document(answer(usage), completion_id="c", model="m", created=1))
    return usage_from_openai_family(document["usage"])


def streamed(usage: dict[str, Any]) -> Usage:
    translator = ConverseStreamTranslator(completion_id="c", model="m", created=1)
    translator.chunks("messageStart", {"role": "assistant"})
    translator.chunks("messageStop", {"stopReason": "end_turn"})
    (chunk,) = translator.chunks("metadata", {"usage": usage, "metrics": {"latencyMs": 812}})
    return usage_from_openai_family(chunk["usage"])


def test_case_2_cache_writes_without_their_ttl_are_5_minute_writes_flagged() -> None:
    raw = {
        "inputTokens": 6,
        "outputTokens": 2745,
        "totalTokens": 161_968,
        "cacheReadInputTokens": 0,
        "cacheWriteInputTokens": 159_217,
    }
    for read in (plain, streamed):
        usage = read(raw)
        assert usage == Usage(
            input_tokens=159_223,
            cache_write_5m_tokens=159_217,
            output_tokens=2745,
            flags=("cache_write_ttl_assumed",),
        )
        assert price_usage(PRICE, usage) == 441_426_200  # as Anthropic's own case 2


def test_case_3_cache_details_split_the_writes_by_ttl() -> None:
    raw = {
        "inputTokens": 10,
        "outputTokens": 100,
        "totalTokens": 1_000_110,
        "cacheReadInputTokens": 0,
        "cacheWriteInputTokens": 1_000_000,
        "cacheDetails": [{"ttl": "1h", "inputTokens": 600_000}, {"ttl": "5m", "inputTokens": 400_000}],
    }
    for read in (plain, streamed):
        usage = read(raw)
        assert usage == Usage(
            input_tokens=1_000_010, cache_write_5m_tokens=400_000, cache_write_1h_tokens=600_000, output_tokens=100
        )
        assert price_usage(BASE_ONLY, usage) == 3_501_020_000  # as Anthropic's own case 3


def test_cache_reads_are_cached_input() -> None:
    raw = {"inputTokens": 100, "outputTokens": 10, "totalTokens": 5110, "cacheReadInputTokens": 5000}
    usage = plain(raw)
    assert usage == Usage(input_tokens=5100, cached_input_tokens=5000, output_tokens=10)
    assert price_usage(PRICE, usage) == 100 * 2_000 + 5000 * 200 + 10 * 10_000


def test_case_9_an_unreadable_input_count_is_derived_from_bedrock_s_total_and_flagged() -> None:
    raw = {
        "inputTokens": -1,
        "outputTokens": 2745,
        "totalTokens": 161_968,
        "cacheReadInputTokens": 0,
        "cacheWriteInputTokens": 159_217,
    }
    for read in (plain, streamed):
        usage = read(raw)
        assert usage == Usage(
            input_tokens=159_223,
            cache_write_5m_tokens=159_217,
            output_tokens=2745,
            flags=("cache_write_ttl_assumed", "field_invalid"),
        )
        assert price_usage(PRICE, usage) == 441_426_200
