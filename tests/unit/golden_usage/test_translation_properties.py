"""Case 4 as properties over any usage: translating between Anthropic's and OpenAI's usage
shapes (chat ingress → Anthropic upstream, /v1/messages ingress → any upstream) never
produces a negative count, keeps every total the sum of its parts, loses nothing on a
round trip, and the charge is never negative and never falls when any count grows."""

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from adapters.http.messages_translate import anthropic_usage
from adapters.providers.anthropic_response import openai_usage
from adapters.providers.openai_family import usage_from_openai_family
from domain.pricing import price_usage
from tests.unit.golden_usage.prices import PRICE

COUNT = st.integers(min_value=0, max_value=2_000_000)
NAMES = ("input_tokens", "cache_read_input_tokens", "five", "hour", "output_tokens", "searches")


def anthropic_raw(input_tokens: int, read: int, five: int, hour: int, output: int, searches: int) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": five + hour,
        "cache_read_input_tokens": read,
        "cache_creation": {"ephemeral_5m_input_tokens": five, "ephemeral_1h_input_tokens": hour},
        "output_tokens": output,
    }
    if searches:
        raw["server_tool_use"] = {"web_search_requests": searches}
    return raw


def charge(counts: tuple[int, ...]) -> int:
    return price_usage(PRICE, usage_from_openai_family(openai_usage(anthropic_raw(*counts))))


def _never_negative(document: dict[str, Any]) -> None:
    for value in document.values():
        if isinstance(value, dict):
            _never_negative(value)
        elif isinstance(value, int):
            assert value >= 0


@given(st.tuples(COUNT, COUNT, COUNT, COUNT, COUNT, st.integers(min_value=0, max_value=100)))
def test_anthropic_usage_through_openais_shape_and_back_is_unchanged_and_never_negative(
    counts: tuple[int, ...],
) -> None:
    raw = anthropic_raw(*counts)
    seen_by_chat_client = openai_usage(raw)
    _never_negative(seen_by_chat_client)
    assert seen_by_chat_client["total_tokens"] == (
        seen_by_chat_client["prompt_tokens"] + seen_by_chat_client["completion_tokens"]
    )
    assert seen_by_chat_client["prompt_tokens"] == sum(counts[:4])
    back = anthropic_usage(seen_by_chat_client)
    _never_negative(back)
    expected = {k: v for k, v in raw.items() if k not in ("cache_creation", "cache_creation_input_tokens")}
    if counts[2] + counts[3]:
        expected["cache_creation_input_tokens"] = raw["cache_creation_input_tokens"]
        expected["cache_creation"] = raw["cache_creation"]
    assert back == expected


@given(st.tuples(COUNT, COUNT, COUNT, COUNT, COUNT, st.integers(min_value=0, max_value=100)), st.data())
def test_the_charge_is_never_negative_and_never_falls_when_a_count_grows(
    counts: tuple[int, ...], data: st.DataObject
) -> None:
    which = data.draw(st.integers(min_value=0, max_value=len(counts) - 1), label=f"grow {NAMES}")
    more = data.draw(st.integers(min_value=1, max_value=500_000), label="by")
    grown = tuple(count + more if index == which else count for index, count in enumerate(counts))
    assert 0 <= charge(counts) <= charge(grown)


OPENAI_COUNT = st.one_of(COUNT, st.none(), st.integers(min_value=-5, max_value=-1))


@given(
    prompt=OPENAI_COUNT,
    completion=OPENAI_COUNT,
    cached=OPENAI_COUNT,
    writes=OPENAI_COUNT,
    reasoning=OPENAI_COUNT,
    total=st.one_of(st.none(), COUNT),
)
def test_any_openai_family_usage_shown_to_a_messages_client_is_never_negative_and_adds_up(
    prompt: Any, completion: Any, cached: Any, writes: Any, reasoning: Any, total: Any
) -> None:
    reported = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
        "prompt_tokens_details": {"cached_tokens": cached, "cache_write_tokens": writes},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }
    shown = anthropic_usage(reported)
    _never_negative(shown)
    counted = usage_from_openai_family(reported)
    parts = shown["input_tokens"] + shown["cache_read_input_tokens"] + shown.get("cache_creation_input_tokens", 0)
    assert parts == counted.input_tokens
    assert shown["output_tokens"] == counted.output_tokens
    assert price_usage(PRICE, counted) >= 0
