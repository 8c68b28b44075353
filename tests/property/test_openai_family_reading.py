"""OpenAI's plain usage object is read by a short path (adapters/providers/openai_family.py
``_plain_openai_usage``); any usage object, plain, of another dialect or garbled, gives the
same ``Usage`` (or the same error) as the general reading of every dialect."""

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.providers.openai_family import (
    _plain_openai_usage,
    _usage_of_any_dialect,
    usage_from_openai_family,
)
from domain.usage import Usage

OPENAI_USAGE = {
    "prompt_tokens": 4,
    "completion_tokens": 20,
    "total_tokens": 24,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}

count: st.SearchStrategy[Any] = st.one_of(
    st.integers(0, 3000),
    st.integers(0, 3000),  # mostly plain counts
    st.integers(-5, -1),
    st.floats(0, 3000).map(float),
    st.sampled_from([None, True, False, "12", 7.5, [], {}]),
)
prompt_details = st.dictionaries(
    st.sampled_from(
        ["cached_tokens", "audio_tokens", "cache_write_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens"]
    ),
    count,
    max_size=3,
)
completion_details = st.dictionaries(st.sampled_from(["reasoning_tokens", "audio_tokens"]), count, max_size=2)
optional = {
    "prompt_tokens_details": st.one_of(prompt_details, st.sampled_from([None, [], "x"])),
    "completion_tokens_details": st.one_of(completion_details, st.sampled_from([None, 3])),
    "prompt_cache_hit_tokens": count,
    "prompt_cache_miss_tokens": count,
    "server_tool_use": st.dictionaries(st.just("web_search_requests"), count),
    "service_tier": st.sampled_from(["default", "flex", "", 5, None]),
    "cost": st.sampled_from([0.01, "0.02"]),
}


@st.composite
def usage_objects(draw: st.DrawFn) -> dict[str, Any]:
    prompt, completion = draw(count), draw(count)
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion}
    if draw(st.booleans()) and type(prompt) is int and type(completion) is int:
        usage["total_tokens"] = prompt + completion + draw(st.sampled_from([0, 0, 0, 1, 40]))
    elif draw(st.booleans()):
        usage["total_tokens"] = draw(count)
    for key in draw(st.lists(st.sampled_from(sorted(optional)), unique=True, max_size=4)):
        usage[key] = draw(optional[key])
    for key in draw(st.lists(st.sampled_from(["prompt_tokens", "completion_tokens"]), unique=True, max_size=1)):
        del usage[key]
    return usage


@st.composite
def near_plain_usage_objects(draw: st.DrawFn) -> dict[str, Any]:
    """OpenAI's plain usage with one or two counts (top level or in the details) changed or gone."""
    small_or_not = st.one_of(st.integers(0, 2), st.integers(0, 3000))  # a total of 0 or 1 may be a bool
    prompt, completion, cached, reasoning = (draw(small_or_not) for _ in range(4))
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0},
    }
    for place, key in draw(
        st.lists(
            st.sampled_from(
                [
                    (None, "prompt_tokens"),
                    (None, "completion_tokens"),
                    (None, "total_tokens"),
                    ("prompt_tokens_details", "cached_tokens"),
                    ("prompt_tokens_details", "cache_write_tokens"),
                    ("completion_tokens_details", "reasoning_tokens"),
                ]
            ),
            unique=True,
            max_size=2,
        )
    ):
        target = usage if place is None else usage[place]
        if draw(st.booleans()):
            target[key] = draw(count)
        else:
            target.pop(key, None)
    return usage


def outcome(read: Any, usage: dict[str, Any], tier: Any) -> list[tuple[str, type, Any]] | str:
    """What ``read`` made of ``usage``: each field with its type (3.0 is not 3 here), or its error."""
    try:
        made = read(usage, tier)
    except Exception as error:  # noqa: BLE001 - the same error either way is what is compared
        return f"{type(error).__name__}: {error}"
    return [(name, type(value), value) for name, value in vars_of(made)]


def vars_of(usage: Usage) -> list[tuple[str, Any]]:
    return [(name, getattr(usage, name)) for name in Usage.__dataclass_fields__]


@settings(max_examples=800, deadline=None)
@given(usage=st.one_of(usage_objects(), near_plain_usage_objects()), tier=st.sampled_from([None, "priority", 3]))
def test_any_usage_object_reads_as_the_general_reading_of_every_dialect(usage: dict[str, Any], tier: Any) -> None:
    assert outcome(usage_from_openai_family, usage, tier) == outcome(_usage_of_any_dialect, usage, tier)


def test_openai_usage_as_openai_sends_it_takes_the_short_path() -> None:
    assert _plain_openai_usage(OPENAI_USAGE, "default") == Usage(
        input_tokens=4, output_tokens=20, service_tier="default"
    )
    cached = {**OPENAI_USAGE, "prompt_tokens_details": {"cached_tokens": 3}, "completion_tokens_details": None}
    assert _plain_openai_usage(cached, None) == Usage(input_tokens=4, cached_input_tokens=3, output_tokens=20)


def test_any_other_dialect_is_left_to_the_general_reading() -> None:
    for other in (
        {**OPENAI_USAGE, "total_tokens": 30},  # xAI's reasoning outside completion, or a wrong total
        {**OPENAI_USAGE, "prompt_cache_hit_tokens": 2, "prompt_cache_miss_tokens": 2},  # DeepSeek
        {**OPENAI_USAGE, "prompt_tokens_details": {"cached_tokens": 1, "cache_write_tokens": 2}},  # OpenRouter
        {**OPENAI_USAGE, "server_tool_use": {"web_search_requests": 1}},
        {**OPENAI_USAGE, "completion_tokens": None},
        {**OPENAI_USAGE, "prompt_tokens": 4.0},
        {**OPENAI_USAGE, "prompt_tokens": 1, "completion_tokens": 0, "total_tokens": True},  # True == 1
    ):
        assert _plain_openai_usage(other, None) is None
