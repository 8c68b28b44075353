"""Case 7, the rule itself (adapters/http/images.py ``_usage``): an image generation
without token counts (dall-e) is charged per image; one with them (gpt-image, whose
output tokens are all image tokens) at the model's own token rates; through the gateway,
a failed generation charges nothing (test_through_the_gateway.py).

Shape: https://platform.openai.com/docs/api-reference/images/object (``usage`` with
``input_tokens_details.text_tokens`` / ``image_tokens``, gpt-image models only)."""

from adapters.http.images import _usage as images_usage
from application.pricing_input import price_from_credits
from domain.pricing import price_usage
from domain.usage import Usage

DALLE = price_from_credits(input="0", output="0", per_image="0.04")
GPT_IMAGE = price_from_credits(input="5", output="40")  # text input, image output, credits per 1M tokens


def test_case_7_without_token_counts_each_image_is_charged_per_image() -> None:
    answer = {"created": 1_765_000_000, "data": [{"url": "https://…/1.png"}, {"url": "https://…/2.png"}]}
    usage = images_usage(answer)
    assert usage == Usage(images=2)
    assert price_usage(DALLE, usage) == 80_000_000


def test_case_7_with_token_counts_the_tokens_are_charged_at_the_models_rates() -> None:
    answer = {
        "created": 1_765_000_000,
        "data": [{"b64_json": "iVBORw0KGgo="}],
        "usage": {
            "total_tokens": 4210,
            "input_tokens": 50,
            "output_tokens": 4160,
            "input_tokens_details": {"text_tokens": 50, "image_tokens": 0},
        },
    }
    usage = images_usage(answer)
    assert usage == Usage(input_tokens=50, output_tokens=4160, images=1)
    assert price_usage(GPT_IMAGE, usage) == 50 * 5_000 + 4160 * 40_000  # 166,650,000: no per-image fee on top
