"""Gemini's generateContent: case 5 — a prompt above 200,000 tokens (cached tokens counted
toward it) is priced entirely at the long-context tier, thinking tokens are output;
exactly 200,000 stays in the lower tier.

Shape: https://ai.google.dev/api/generate-content#UsageMetadata (``promptTokenCount``
includes ``cachedContentTokenCount``; ``candidatesTokenCount`` excludes
``thoughtsTokenCount``, which is billed as output)."""

from typing import Any

import pytest

from adapters.providers.gemini_response import ChunkTranslator, completion_document
from adapters.providers.openai_family import usage_from_openai_family
from domain.pricing import price_usage
from domain.usage import Usage
from tests.unit.golden_usage.prices import PRICE


def metadata(prompt: int, cached: int) -> dict[str, Any]:
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": 500,
        "totalTokenCount": prompt + 500 + 8000,
        "cachedContentTokenCount": cached,
        "thoughtsTokenCount": 8000,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
        "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": cached}],
    }


def response(usage_metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "candidates": [
            {"content": {"parts": [{"text": "Summary."}], "role": "model"}, "finishReason": "STOP", "index": 0}
        ],
        "usageMetadata": usage_metadata,
        "modelVersion": "gemini-2.5-pro",
        "responseId": "golden",
    }


def plain(usage_metadata: dict[str, Any]) -> Usage:
    return usage_from_openai_family(completion_document(response(usage_metadata), "gemini-2.5-pro")["usage"])


def streamed(usage_metadata: dict[str, Any]) -> Usage:
    first = {
        "candidates": [{"content": {"parts": [{"text": "Sum"}], "role": "model"}, "index": 0}],
        "modelVersion": "gemini-2.5-pro",
        "responseId": "golden",
    }
    translator = ChunkTranslator(first, "gemini-2.5-pro", 1)
    translator.take(first)
    translator.take(response(usage_metadata))
    return usage_from_openai_family(translator.closing()[-1]["usage"])


READ = pytest.mark.parametrize("read", [plain, streamed], ids=["plain", "stream"])


@READ
def test_case_5_above_200k_every_class_is_at_the_long_context_rate_and_thoughts_are_output(read: Any) -> None:
    usage = read(metadata(250_000, 100_000))
    assert usage == Usage(input_tokens=250_000, cached_input_tokens=100_000, output_tokens=8_500, reasoning_tokens=8000)
    # 150,000 × 4.0 + 100,000 × 0.4 + 500 × 15.0 + 8,000 × 16.0 (the tier's rates, credits per 1M)
    assert price_usage(PRICE, usage) == 775_500_000


@READ
def test_case_5_exactly_200k_prompt_tokens_stays_in_the_lower_tier(read: Any) -> None:
    usage = read(metadata(200_000, 100_000))
    # 100,000 × 2.0 + 100,000 × 0.2 + 500 × 10.0 + 8,000 × 11.0
    assert price_usage(PRICE, usage) == 313_000_000


@READ
def test_case_5_one_token_more_and_the_whole_request_moves_up(read: Any) -> None:
    usage = read(metadata(200_001, 100_000))
    # 100,001 × 4.0 + 100,000 × 0.4 + 500 × 15.0 + 8,000 × 16.0
    assert price_usage(PRICE, usage) == 575_504_000


@READ
def test_case_9_an_unreadable_prompt_count_is_derived_from_gemini_s_total_and_flagged(read: Any) -> None:
    usage = read({**metadata(250_000, 100_000), "promptTokenCount": "250000"})
    assert usage == Usage(
        input_tokens=250_000,
        cached_input_tokens=100_000,
        output_tokens=8_500,
        reasoning_tokens=8000,
        flags=("field_invalid",),
    )
    assert price_usage(PRICE, usage) == 775_500_000  # as case 5
