"""OpenAI's chat completions: cases 1 (cached and reasoning tokens), 6 (the service tier
the response reports) and 9 (missing totals, null or mistyped counts).

Shapes: https://platform.openai.com/docs/api-reference/chat/object (``usage`` with
``prompt_tokens_details.cached_tokens`` inside ``prompt_tokens``,
``completion_tokens_details.reasoning_tokens`` inside ``completion_tokens``;
``service_tier`` at the top of the answer, not inside ``usage``)."""

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.providers.openai_family import usage_from_openai_family
from domain.pricing import price_usage
from domain.usage import Usage
from tests.unit.golden_usage.prices import PRICE


def answer(usage: dict[str, Any], service_tier: str = "default") -> dict[str, Any]:
    """A ``chat.completion`` as OpenAI sends it."""
    return {
        "id": "chatcmpl-golden",
        "object": "chat.completion",
        "created": 1_765_000_000,
        "model": "o4-mini-2025-04-16",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "42", "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
        "service_tier": service_tier,
        "system_fingerprint": None,
    }


def normalised(document: dict[str, Any]) -> Usage:
    """What the gateway reads from an answer (adapters/http/chat.py ``_usage_of``)."""
    return usage_from_openai_family(document["usage"], document.get("service_tier"))


CASE_1_USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 200,
    "total_tokens": 1200,
    "prompt_tokens_details": {"cached_tokens": 800, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 150,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}


def test_case_1_cached_input_is_inside_prompt_and_reasoning_inside_completion_counted_once() -> None:
    usage = normalised(answer(CASE_1_USAGE))
    assert usage == Usage(
        input_tokens=1000, cached_input_tokens=800, output_tokens=200, reasoning_tokens=150, service_tier="default"
    )
    assert usage.uncached_input_tokens == 200
    # 200 × 2.0 + 800 × 0.2 + (200 − 150) × 10.0 + 150 × 11.0 credits per 1M, in nanocredits;
    # reasoning added to output again would be 1,500,000 more, cached priced as input 1,440,000 more
    assert price_usage(PRICE, usage) == 2_710_000


@pytest.mark.parametrize(
    ("answered", "charge"),
    [
        # requested priority, answered default: the base rates (same as case 1)
        ("default", 2_710_000),
        # 200 × 3.5 + 800 × 0.35 + 50 × 17 + 150 × 18
        ("priority", 4_530_000),
        # 200 × 1.0 + 800 × 0.1 + 50 × 5 + 150 × 5.5
        ("flex", 1_355_000),
        # a tier the price does not list: the base rates
        ("scale", 2_710_000),
    ],
)
def test_case_6_the_service_tier_the_response_reports_prices_it_not_the_one_requested(
    answered: str, charge: int
) -> None:
    usage = normalised(answer(CASE_1_USAGE, service_tier=answered))
    assert usage.service_tier == answered
    assert price_usage(PRICE, usage) == charge


def test_case_6_a_stream_chunk_reports_the_tier_at_its_top_too() -> None:
    chunk = {
        "id": "chatcmpl-golden",
        "object": "chat.completion.chunk",
        "created": 1_765_000_000,
        "model": "o4-mini-2025-04-16",
        "service_tier": "default",
        "system_fingerprint": None,
        "choices": [],
        "usage": CASE_1_USAGE,
    }
    usage = usage_from_openai_family(chunk["usage"], chunk["service_tier"])
    assert usage.service_tier == "default" and price_usage(PRICE, usage) == 2_710_000


# ---------------------------------------------------------------- case 9


@pytest.mark.parametrize(
    ("reported", "expected"),
    [
        # total_tokens missing: the parts are used, flagged
        (
            {"prompt_tokens": 1000, "completion_tokens": 200},
            Usage(input_tokens=1000, output_tokens=200, flags=("total_derived",)),
        ),
        # total_tokens inconsistent with the parts: the parts are used, flagged
        (
            {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 99_999},
            Usage(input_tokens=1000, output_tokens=200, flags=("total_derived",)),
        ),
        # prompt_tokens null: derived from the total and the completion
        (
            {"prompt_tokens": None, "completion_tokens": 200, "total_tokens": 1200},
            Usage(input_tokens=1000, output_tokens=200, flags=("field_invalid",)),
        ),
        # prompt_tokens absent: derived the same way
        (
            {"completion_tokens": 200, "total_tokens": 1200},
            Usage(input_tokens=1000, output_tokens=200, flags=("field_invalid",)),
        ),
        # completion_tokens a string, a negative prompt: each derived from the other and the total
        (
            {"prompt_tokens": 1000, "completion_tokens": "200", "total_tokens": 1200},
            Usage(input_tokens=1000, output_tokens=200, flags=("field_invalid",)),
        ),
        (
            {"prompt_tokens": -5, "completion_tokens": 200, "total_tokens": 1200},
            Usage(input_tokens=1000, output_tokens=200, flags=("field_invalid",)),
        ),
        # a whole float is a count; 2.5 is not
        (
            {"prompt_tokens": 1000.0, "completion_tokens": 2.5, "total_tokens": 1200},
            Usage(input_tokens=1000, output_tokens=200, flags=("field_invalid",)),
        ),
        # cached tokens null: 0, flagged; the rest as reported
        (
            {
                "prompt_tokens": 1000,
                "completion_tokens": 200,
                "total_tokens": 1200,
                "prompt_tokens_details": {"cached_tokens": None},
            },
            Usage(input_tokens=1000, output_tokens=200, flags=("field_invalid",)),
        ),
        # nothing readable and no total: zeros, both flags (the gateway estimates these: streams.charged_usage)
        (
            {"prompt_tokens": None, "completion_tokens": "many"},
            Usage(flags=("field_invalid", "total_derived")),
        ),
    ],
)
def test_case_9_missing_totals_and_unreadable_counts_are_derived_and_flagged(
    reported: dict[str, Any], expected: Usage
) -> None:
    usage = usage_from_openai_family(reported)
    assert usage == expected
    assert price_usage(PRICE, usage) == (
        expected.input_tokens * 2_000 + expected.output_tokens * 10_000  # no cache, no reasoning: per token
    )


COUNT = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.none(),
    st.text(max_size=4),
    st.floats(allow_nan=True),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)


@given(
    prompt=COUNT,
    completion=COUNT,
    total=COUNT,
    cached=COUNT,
    reasoning=COUNT,
    writes=COUNT,
    searches=COUNT,
    drop=st.sets(st.sampled_from(["prompt_tokens", "completion_tokens", "total_tokens"])),
)
def test_case_9_any_garbled_usage_reads_as_counts_that_are_never_negative_and_flags_what_it_did(
    prompt: Any, completion: Any, total: Any, cached: Any, reasoning: Any, writes: Any, searches: Any, drop: set[str]
) -> None:
    reported = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
        "prompt_tokens_details": {"cached_tokens": cached, "cache_write_tokens": writes},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
        "server_tool_use": {"web_search_requests": searches},
    }
    for key in drop:
        del reported[key]
    usage = usage_from_openai_family(reported)  # Usage itself refuses a negative or inconsistent count
    assert price_usage(PRICE, usage) >= 0
    values = (prompt, completion, total, cached, reasoning, writes, searches)
    plain = not drop and all(_is_count(value) for value in values)
    if not plain:
        assert usage.flags, "a usage that was not plainly reported is flagged"


def _is_count(value: Any) -> bool:
    if isinstance(value, float) and value.is_integer():
        return value >= 0
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def test_openrouter_web_searches_are_counted_and_charged_per_call() -> None:
    # https://openrouter.ai/docs (usage.server_tool_use: web_search_requests, tool_calls_requested,
    # tool_calls_executed — "do not sum the two": only web_search_requests is read)
    reported = {
        **CASE_1_USAGE,
        "cost": 0.0123,
        "server_tool_use": {"web_search_requests": 2, "tool_calls_requested": 2, "tool_calls_executed": 2},
    }
    usage = usage_from_openai_family(reported)
    assert usage.web_search_calls == 2
    assert price_usage(PRICE, usage) == 2_710_000 + 2 * 10_000_000
