from uuid import uuid4

import orjson

from adapters.http.errors import response_for
from domain.errors import InsufficientCredits, InvalidRequest, ModelNotFound, UpstreamError
from domain.spend_caps import SpendCapReached


def body(response) -> dict:
    return orjson.loads(response.body)["error"]


def test_each_error_gets_its_honest_status_and_openais_shape() -> None:
    cases = [
        (InvalidRequest("bad", param="n"), 400, "invalid_request"),
        (InsufficientCredits(uuid4(), needed=5, available=1), 402, "insufficient_credits"),
        (ModelNotFound("no"), 404, "model_not_found"),
        (
            UpstreamError("slow down", status=429, code="upstream_rate_limited", retry_after="7"),
            429,
            "upstream_rate_limited",
        ),
        (UpstreamError("down", status=502, code="upstream_error"), 502, "upstream_error"),
    ]
    for exc, status, code in cases:
        response = response_for(exc)
        assert response.status_code == status and body(response)["code"] == code
        assert set(body(response)) == {"message", "type", "param", "code"}


def test_a_reached_spend_cap_is_429_with_the_time_until_the_window_resets() -> None:
    response = response_for(SpendCapReached("account", "day", 100, retry_after_seconds=3600))
    assert response.status_code == 429 and response.headers["retry-after"] == "3600"
    assert body(response)["code"] == "spend_cap_reached"


def test_unexpected_errors_never_leak_their_text() -> None:
    response = response_for(RuntimeError("password=hunter2"))
    assert response.status_code == 500 and "hunter2" not in response.body.decode()
