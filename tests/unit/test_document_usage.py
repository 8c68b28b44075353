"""What a whole answer (embeddings, images) is charged from its document: the reported
counts when they are sane integers, else what can be counted or estimated."""

from typing import Any

import pytest

from adapters.http.embeddings import _usage as embeddings_usage
from adapters.http.images import _usage as images_usage
from domain.estimation import tokens_for_chars
from domain.usage import Usage


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            {"data": [{}, {}], "usage": {"input_tokens": 12, "output_tokens": 300}},
            Usage(input_tokens=12, output_tokens=300, images=2),
        ),
        ({"data": [{}], "usage": {"input_tokens": -5, "output_tokens": "300"}}, Usage(images=1)),
        ({"data": [{}], "usage": None}, Usage(images=1)),
        ({"data": "not a list", "usage": ["not", "a", "dict"]}, Usage(images=0)),
        ({}, Usage(images=0)),
    ],
)
def test_images_are_charged_per_image_delivered_and_the_sane_token_counts_reported(
    document: dict[str, Any], expected: Usage
) -> None:
    assert images_usage(document) == expected


def test_embeddings_are_charged_the_reported_prompt_tokens_else_an_estimate_from_the_input() -> None:
    body = {"input": ["abcdefgh", [1, 2, 3]]}
    assert embeddings_usage({"usage": {"prompt_tokens": 9}}, body) == Usage(input_tokens=9)
    estimated = {"usage": {"prompt_tokens": 9, "usage_source": "estimated"}}
    assert embeddings_usage(estimated, body) == Usage(input_tokens=9, source="estimated")
    for unreadable in ({"usage": None}, {"usage": {"prompt_tokens": -1}}, {}):
        assert embeddings_usage(unreadable, body) == Usage(input_tokens=tokens_for_chars(8 + 12), source="estimated")
