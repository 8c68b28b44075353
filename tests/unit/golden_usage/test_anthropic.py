"""Anthropic's Messages API: cases 2 (5-minute cache writes), 3 (1-hour and 5-minute writes;
a total without its split), web searches and the service tier — for chat ingress (the
answer translated to OpenAI's shape, plain and streamed) and /v1/messages ingress (the
caller gets Anthropic's own usage shape back).

Shapes: https://docs.anthropic.com/en/api/messages (``usage``: ``input_tokens`` without
cache reads or writes, ``cache_creation_input_tokens``, ``cache_read_input_tokens``,
``cache_creation.ephemeral_5m_input_tokens`` / ``ephemeral_1h_input_tokens``,
``server_tool_use.web_search_requests``, ``service_tier``); streaming: ``message_start``
carries the input side, ``message_delta`` cumulative totals."""

from dataclasses import replace
from typing import Any

import pytest

from adapters.http.messages_translate import anthropic_usage
from adapters.providers.anthropic_response import StreamTranslator, chat_completion
from adapters.providers.openai_family import usage_from_openai_family
from domain.pricing import price_usage
from domain.usage import Usage
from tests.unit.golden_usage.prices import PRICE

BASE_ONLY = replace(PRICE, context_tiers=())  # to see each write class at its base rate

CASE_2 = {
    "input_tokens": 6,
    "cache_creation_input_tokens": 159217,
    "cache_read_input_tokens": 0,
    "cache_creation": {"ephemeral_5m_input_tokens": 159217, "ephemeral_1h_input_tokens": 0},
    "output_tokens": 2745,
    "service_tier": "standard",
}
CASE_3 = {
    "input_tokens": 10,
    "cache_creation_input_tokens": 1_000_000,
    "cache_read_input_tokens": 0,
    "cache_creation": {"ephemeral_5m_input_tokens": 400_000, "ephemeral_1h_input_tokens": 600_000},
    "output_tokens": 100,
    "service_tier": "standard",
}


def message(usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "msg_01Golden",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": "Done."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }


def plain(usage: dict[str, Any]) -> Usage:
    """Chat ingress, a whole answer: the adapter's chat.completion, read as the gateway reads it."""
    document = chat_completion(message(usage), created=1)
    return usage_from_openai_family(document["usage"], document.get("service_tier"))


def streamed(usage: dict[str, Any]) -> Usage:
    """Chat ingress, a stream: message_start has the input side, message_delta the totals."""
    start_usage = {**usage, "output_tokens": 1}
    final = {k: usage[k] for k in usage if k not in ("cache_creation", "service_tier")}
    events = [
        {"type": "message_start", "message": {**message(start_usage), "content": [], "stop_reason": None}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Done."}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": final},
        {"type": "message_stop"},
    ]
    translator = StreamTranslator(created=1)
    chunks = [chunk for event in events for chunk in translator.take(event)]
    last = chunks[-1]
    return usage_from_openai_family(last["usage"], last.get("service_tier"))


READ = pytest.mark.parametrize("read", [plain, streamed], ids=["plain", "stream"])


@READ
def test_case_2_cache_writes_are_priced_at_the_5_minute_rate_not_as_plain_input(read: Any) -> None:
    usage = read(CASE_2)
    assert usage == Usage(
        input_tokens=159_223, cache_write_5m_tokens=159_217, output_tokens=2745, service_tier="standard"
    )
    # 6 × 2.0 + 159,217 × 2.6 + 2,745 × 10.0 credits per 1M (159,223 prompt tokens: below the
    # 200k tier). Folding the writes into plain input (the bug) gave 345,896,000.
    assert price_usage(PRICE, usage) == 441_426_200


@READ
def test_case_3_each_ttl_of_cache_writes_at_its_own_rate(read: Any) -> None:
    usage = read(CASE_3)
    assert usage == Usage(
        input_tokens=1_000_010,
        cache_write_5m_tokens=400_000,
        cache_write_1h_tokens=600_000,
        output_tokens=100,
        service_tier="standard",
    )
    # 10 × 2.0 + 400,000 × 2.6 + 600,000 × 4.1 + 100 × 10.0
    assert price_usage(BASE_ONLY, usage) == 3_501_020_000
    # and above the 200k tier, every class at the tier's rate: 10 × 4 + 400k × 5.3 + 600k × 8.3 + 100 × 15
    assert price_usage(PRICE, usage) == 7_101_540_000


@READ
def test_case_3_a_write_total_without_its_split_is_priced_as_5_minute_writes_and_flagged(read: Any) -> None:
    total_only = {k: v for k, v in CASE_3.items() if k != "cache_creation"}
    usage = read(total_only)
    assert usage == Usage(
        input_tokens=1_000_010,
        cache_write_5m_tokens=1_000_000,
        output_tokens=100,
        service_tier="standard",
        flags=("cache_write_ttl_assumed",),
    )
    # 10 × 2.0 + 1,000,000 × 2.6 + 100 × 10.0
    assert price_usage(BASE_ONLY, usage) == 2_601_020_000


@READ
def test_web_searches_are_counted_and_charged_per_call(read: Any) -> None:
    usage = read({**CASE_2, "server_tool_use": {"web_search_requests": 3}})
    assert usage.web_search_calls == 3
    assert price_usage(PRICE, usage) == 441_426_200 + 3 * 10_000_000


@READ
def test_the_service_tier_anthropic_reports_prices_the_request(read: Any) -> None:
    usage = read({**CASE_2, "cache_creation_input_tokens": 0, "cache_creation": None, "service_tier": "priority"})
    assert usage == Usage(input_tokens=6, output_tokens=2745, service_tier="priority")
    assert price_usage(PRICE, usage) == 6 * 3_500 + 2745 * 17_000  # the priority tier's rates


def test_cache_reads_and_writes_together_are_inside_the_prompt_and_each_at_its_rate() -> None:
    usage = plain({**CASE_2, "cache_read_input_tokens": 50_000})
    assert usage == Usage(
        input_tokens=209_223,
        cached_input_tokens=50_000,
        cache_write_5m_tokens=159_217,
        output_tokens=2745,
        service_tier="standard",
    )
    # cache reads count toward the 200k threshold: the whole request is in the long tier
    # 6 × 4 + 50,000 × 0.4 + 159,217 × 5.3 + 2,745 × 15
    assert price_usage(PRICE, usage) == 24_000 + 20_000_000 + 843_850_100 + 41_175_000


@pytest.mark.parametrize("raw", [CASE_2, CASE_3, {**CASE_2, "server_tool_use": {"web_search_requests": 2}}])
def test_messages_ingress_hands_anthropics_own_counts_back_unchanged(raw: dict[str, Any]) -> None:
    """/v1/messages → Anthropic upstream: the caller sees what Anthropic reported (the round
    trip through OpenAI's shape loses nothing), and the charge is the same Usage."""
    document = chat_completion(message(raw), created=1)
    shown = anthropic_usage(document["usage"])
    expected = {k: v for k, v in raw.items() if k != "service_tier"}
    assert shown == expected
    assert usage_from_openai_family(document["usage"], "standard") == plain(raw)


@READ
def test_case_9_an_unreadable_count_is_flagged_never_negative_and_left_for_the_estimate(read: Any) -> None:
    usage = read({**CASE_2, "output_tokens": "2745"})
    assert usage == Usage(
        input_tokens=159_223,
        cache_write_5m_tokens=159_217,
        service_tier="standard",
        flags=("field_invalid", "total_derived"),
    )
    # the output left at 0 is estimated from the text relayed (application/streams.py charged_usage)
    assert price_usage(PRICE, usage) == 441_426_200 - 2745 * 10_000
