"""OpenAI's x-ratelimit-* headers (adapters/http/rate_limit_headers.py): resets written as
OpenAI writes them, each trio only when a limit of its kind applies."""

import pytest

from adapters.http.rate_limit_headers import duration_text, rate_limit_headers
from application.ports import Admission, WindowState


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.02, "20ms"),
        (0.0001, "1ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (59.999, "59.999s"),
        (360, "6m0s"),
        (61.25, "1m1.25s"),
        (3600, "1h0m0s"),
    ],
)
def test_resets_are_written_as_openai_writes_them(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


def test_each_trio_only_when_its_limit_applies() -> None:
    requests = WindowState(limit=60, remaining=59, reset_seconds=0.0)
    assert rate_limit_headers(Admission(True, 0.0, None, requests, None, "1")) == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "0s",
    }
    tokens = WindowState(limit=1000, remaining=0, reset_seconds=6.5)
    headers = rate_limit_headers(Admission(False, 6.5, "key:x tokens", None, tokens, ""))
    assert headers == {
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "6.5s",
    }
    assert rate_limit_headers(None) == {}
