"""What the fuzzing found, each pinned by a plain test so it stays fixed."""

import json
from typing import Any

import pytest

from application.event_scan import scan
from application.verify import HOLD_PLACED
from tests.fuzz.conftest import ACCOUNT, FuzzGateway
from tests.fuzz.test_hot_route_bodies import VALID


def _holds_placed(gateway: FuzzGateway) -> int:
    return len(list(scan(gateway.services.ledger.recorder, [HOLD_PLACED])))


@pytest.mark.parametrize("path", list(VALID))
def test_a_body_nested_too_deep_to_forward_is_refused_before_any_hold(fuzz_gateway: FuzzGateway, path: str) -> None:
    """Content nested 300 levels parsed (orjson reads 1,024) but could not be written for the
    provider (orjson writes 254): a 500 after the hold was placed."""
    deep: Any = "Hello"
    for _ in range(300):
        deep = [deep]
    field, value = ("input", deep) if path == "/v1/embeddings" else ("messages", [{"role": "user", "content": deep}])
    holds_before = _holds_placed(fuzz_gateway)
    fuzz_gateway.upstream.reset()
    response = fuzz_gateway.client.post(path, content=json.dumps({**VALID[path], field: value}).encode(),
                                        headers=fuzz_gateway.auth("user"))
    assert response.status_code == 400, response.text
    assert "nested more than 254 levels" in response.text
    assert _holds_placed(fuzz_gateway) == holds_before and not fuzz_gateway.upstream.requests


def test_a_body_nested_as_deep_as_can_be_forwarded_is_served(fuzz_gateway: FuzzGateway) -> None:
    deep: Any = "Hello"
    for _ in range(200):
        deep = [deep]
    body = {**VALID["/v1/chat/completions"], "metadata": deep}  # passed through to the provider as sent
    response = fuzz_gateway.client.post("/v1/chat/completions", content=json.dumps(body).encode(),
                                        headers=fuzz_gateway.auth("user"))
    assert response.status_code != 500 and "nested more than" not in response.text, response.text


@pytest.mark.parametrize("route", ["/keys/{key}/rotate", "/providers/openai/credentials/rotate"])
def test_a_grace_period_too_long_for_a_timedelta_is_a_400(fuzz_gateway: FuzzGateway, route: str) -> None:
    """grace_seconds 2254753275633120509771644928 overflowed timedelta: a 500."""
    key = fuzz_gateway.services.ledger.issue_api_key(ACCOUNT, name="grace").key_id
    body: dict[str, Any] = {"grace_seconds": 2254753275633120509771644928}
    if "credentials" in route:
        body["api_key"] = "sk-new-upstream-secret-0000"
    response = fuzz_gateway.client.post("/admin/v1" + route.format(key=key), json=body,
                                        headers=fuzz_gateway.auth("admin"))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "grace_seconds"
