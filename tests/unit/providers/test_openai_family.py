"""Usage objects as the OpenAI-compatible family really sends them, turned into Usage:
nothing counted twice, nothing above what the provider reported."""

from decimal import Decimal

import pytest

from adapters.providers.openai_family import reasoning_text, reported_cost, usage_from_openai_family
from domain.errors import MalformedUpstreamAnswer
from domain.usage import Usage
from tests.fakes.openai_wire import usage_body


def usage(input_tokens: int, cached: int, output: int, reasoning: int, **more) -> Usage:
    return Usage(
        input_tokens=input_tokens, cached_input_tokens=cached, output_tokens=output, reasoning_tokens=reasoning, **more
    )


# ---------------------------------------------------------------- DeepSeek
# https://api-docs.deepseek.com/api/create-chat-completion (usage: prompt_cache_hit_tokens +
# prompt_cache_miss_tokens = prompt_tokens; completion_tokens_details.reasoning_tokens)
# https://api-docs.deepseek.com/guides/kv_cache (context caching on disk)


def test_deepseek_cache_hits_are_cached_input_counted_once():
    reported = {
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "total_tokens": 1500,
        "prompt_tokens_details": {"cached_tokens": 1024},  # newer responses repeat the hit count here
        "prompt_cache_hit_tokens": 1024,
        "prompt_cache_miss_tokens": 176,
        "completion_tokens_details": {"reasoning_tokens": 250},  # deepseek-reasoner: inside completion_tokens
    }
    assert usage_from_openai_family(reported) == usage(1200, 1024, 300, 250)


def test_deepseek_without_cached_tokens_details_still_reports_its_hits():
    # deepseek-chat before prompt_tokens_details was added: only the hit/miss pair
    reported = {
        "prompt_tokens": 64,
        "completion_tokens": 11,
        "total_tokens": 75,
        "prompt_cache_hit_tokens": 48,
        "prompt_cache_miss_tokens": 16,
    }
    assert usage_from_openai_family(reported) == usage(64, 48, 11, 0)


def test_deepseek_a_cache_miss_is_all_fresh_input():
    reported = {
        "prompt_tokens": 10,
        "completion_tokens": 11,
        "total_tokens": 21,
        "prompt_tokens_details": {"cached_tokens": 0},
        "prompt_cache_hit_tokens": 0,
        "prompt_cache_miss_tokens": 10,
    }
    assert usage_from_openai_family(reported) == usage(10, 0, 11, 0)


def test_deepseek_without_prompt_tokens_takes_hit_plus_miss():
    reported = {"completion_tokens": 5, "prompt_cache_hit_tokens": 30, "prompt_cache_miss_tokens": 12}
    assert usage_from_openai_family(reported) == usage(42, 30, 5, 0, flags=("total_derived",))


def test_deepseek_reasoning_content_is_reasoning_text():
    delta = {"role": "assistant", "content": None, "reasoning_content": "First, 9.11 < 9.9"}
    assert reasoning_text(delta) == "First, 9.11 < 9.9"


# ---------------------------------------------------------------- OpenRouter
# https://openrouter.ai/docs/use-cases/usage-accounting (usage with cost, cost_details,
# prompt_tokens_details.cached_tokens / cache_write_tokens)
# https://openrouter.ai/docs/use-cases/reasoning-tokens (message.reasoning, reasoning_details)


def test_openrouter_usage_accounting_example():
    reported = {
        "completion_tokens": 2,
        "completion_tokens_details": {"reasoning_tokens": 0},
        "cost": 0.95,
        "cost_details": {"upstream_inference_cost": 19},
        "prompt_tokens": 194,
        "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 100, "audio_tokens": 0},
        "total_tokens": 196,
    }
    # a cache-write total without its TTL split: priced as 5-minute writes, flagged
    assert usage_from_openai_family(reported) == usage(
        194, 0, 2, 0, cache_write_5m_tokens=100, flags=("cache_write_ttl_assumed",)
    )
    assert reported_cost(reported) == Decimal("0.95")


def test_openrouter_cache_reads_are_cached_input():
    reported = {
        "prompt_tokens": 2048,
        "completion_tokens": 120,
        "total_tokens": 2168,
        "cost": 0.000412,
        "prompt_tokens_details": {"cached_tokens": 1920, "cache_write_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 64},
    }
    assert usage_from_openai_family(reported) == usage(2048, 1920, 120, 64)
    assert reported_cost(reported) == Decimal("0.000412")


def test_openrouter_relaying_grok_counts_reasoning_inside_completion():
    # OpenRouter normalises xAI: total_tokens = prompt + completion, reasoning inside completion
    reported = {
        "prompt_tokens": 163,
        "completion_tokens": 241,
        "total_tokens": 404,
        "prompt_tokens_details": {"cached_tokens": 162, "cache_write_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 204, "image_tokens": 0},
    }
    assert usage_from_openai_family(reported) == usage(163, 162, 241, 204)


def test_openrouter_reasoning_field_and_details_are_reasoning_text():
    assert reasoning_text({"role": "assistant", "content": "42", "reasoning": "6 times 7"}) == "6 times 7"
    details = [
        {"type": "reasoning.summary", "summary": "Multiplied. "},
        {"type": "reasoning.text", "text": "6*7=42"},
        {"type": "reasoning.encrypted", "data": "gAAAAB..."},
    ]
    assert reasoning_text({"content": "42", "reasoning_details": details}) == "Multiplied. 6*7=42"


def test_a_relay_sending_both_reasoning_names_is_counted_once():
    assert reasoning_text({"reasoning_content": "step one", "reasoning": "step one"}) == "step one"


@pytest.mark.parametrize(
    "cost, expected",
    [
        (0, Decimal("0")),
        ("0.0021", Decimal("0.0021")),
        (None, None),
        (True, None),
        (-1, None),
        ("NaN", None),
        ("abc", None),
        ({"total": 1}, None),
    ],
)
def test_reported_cost_is_exact_decimal_or_none(cost, expected):
    assert reported_cost({"prompt_tokens": 1, "cost": cost}) == expected


# ---------------------------------------------------------------- xAI
# https://docs.x.ai/docs/guides/reasoning (usage.completion_tokens_details.reasoning_tokens)
# https://cloud.google.com/vertex-ai/generative-ai/docs/partner-models/grok/capabilities/reasoning
#   ("The reasoning token count is outputted in the reasoning_tokens field, separated from
#    the completion_tokens.")


def test_xai_reasoning_tokens_outside_completion_tokens_are_added_to_output():
    reported = {
        "prompt_tokens": 32,
        "completion_tokens": 9,
        "total_tokens": 135,  # 32 + 9 + 94
        "prompt_tokens_details": {"text_tokens": 32, "audio_tokens": 0, "image_tokens": 0, "cached_tokens": 6},
        "completion_tokens_details": {
            "reasoning_tokens": 94,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
        "num_sources_used": 0,
    }
    assert usage_from_openai_family(reported) == usage(32, 6, 103, 94)


def test_xai_without_reasoning_is_plain():
    reported = {
        "prompt_tokens": 686,
        "completion_tokens": 11,
        "total_tokens": 697,
        "prompt_tokens_details": {"text_tokens": 686, "cached_tokens": 679, "image_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }
    assert usage_from_openai_family(reported) == usage(686, 679, 11, 0)


def test_xai_reasoning_content_in_a_stream_delta_is_reasoning_text():
    assert reasoning_text({"reasoning_content": "First", "role": "assistant"}) == "First"


# ---------------------------------------------------------------- Doubao (Volcengine Ark)
# https://www.volcengine.com/docs/82379 › API 参考 › 对话(Chat) API (usage.prompt_tokens_details.cached_tokens;
# usage.completion_tokens_details.reasoning_tokens, "输出思维链内容花费的 token 数", inside completion_tokens)


def test_doubao_vision_example():
    reported = {
        "completion_tokens": 64,
        "prompt_tokens": 13,
        "total_tokens": 77,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    assert usage_from_openai_family(reported) == usage(13, 0, 64, 0)


def test_doubao_thinking_model_with_context_cache():
    reported = {
        "completion_tokens": 1200,
        "prompt_tokens": 2048,
        "total_tokens": 3248,
        "prompt_tokens_details": {"cached_tokens": 1024},
        "completion_tokens_details": {"reasoning_tokens": 900},
    }
    assert usage_from_openai_family(reported) == usage(2048, 1024, 1200, 900)


# ---------------------------------------------------------------- Poe
# https://creator.poe.com/api-reference/createChatCompletion (OpenAI-compatible; usage is
# prompt/completion/total tokens, Poe's compute points are not in it)


def test_poe_plain_openai_usage():
    reported = {"prompt_tokens": 12, "completion_tokens": 40, "total_tokens": 52}
    assert usage_from_openai_family(reported) == usage(12, 0, 40, 0)
    assert reported_cost(reported) is None


# ---------------------------------------------------------------- the invariants


@pytest.mark.parametrize(
    ("reported", "expected"),
    [
        (usage_body(100, 20, cached_tokens=30, reasoning_tokens=5), usage(100, 30, 20, 5)),
        (usage_body(7, 0), usage(7, 0, 0, 0)),
        ({"prompt_tokens": 5, "completion_tokens": 3}, usage(5, 0, 3, 0, flags=("total_derived",))),
    ],
)
def test_openais_own_usage_is_read_as_openai_reports_it(reported, expected):
    assert usage_from_openai_family(reported) == expected


def test_cached_and_reasoning_never_exceed_the_reported_totals():
    reported = {
        "prompt_tokens": 10,
        "completion_tokens": 4,
        "total_tokens": 14,
        "prompt_cache_hit_tokens": 50,
        "completion_tokens_details": {"reasoning_tokens": 9},
    }
    assert usage_from_openai_family(reported) == usage(10, 10, 4, 4)


def test_reasoning_is_added_to_output_only_when_total_tokens_shows_it_was_left_out():
    no_total = {"prompt_tokens": 10, "completion_tokens": 4, "completion_tokens_details": {"reasoning_tokens": 9}}
    assert usage_from_openai_family(no_total).output_tokens == 4


@pytest.mark.parametrize("bad", ["12", -3, True, None, 2.5, [1]])
def test_malformed_counts_count_as_zero_instead_of_raising(bad):
    reported = {
        "prompt_tokens": bad,
        "completion_tokens": bad,
        "prompt_tokens_details": {"cached_tokens": bad},
        "completion_tokens_details": "not an object",
    }
    assert usage_from_openai_family(reported) == Usage(flags=("field_invalid", "total_derived"))


def test_reasoning_text_of_nothing_is_empty():
    assert reasoning_text(None) == ""
    assert reasoning_text({"content": "just an answer"}) == ""
    assert reasoning_text({"reasoning": None, "reasoning_details": None}) == ""


@pytest.mark.parametrize("reported", [5, "12 tokens", ["prompt_tokens", 3]])
def test_a_usage_that_is_not_an_object_is_the_providers_garbled_answer(reported):
    with pytest.raises(MalformedUpstreamAnswer):
        usage_from_openai_family(reported)
