"""Bad input gets a clear error in OpenAI's shape with an honest status, and nothing is
charged for it."""

import httpx
import pytest

from tests.e2e.conftest import MODEL, Served


def post(served: Served, body: bytes | str, key: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key or served.api_key}", "content-type": "application/json"}
    return httpx.post(served.gateway.url + "/v1/chat/completions", content=body, headers=headers, timeout=30)


CASES = [
    ("malformed json", b'{"model": "openai/gpt-4o-mini", "messages": [', None, 400, "invalid_request"),
    ("missing messages", b'{"model": "openai/gpt-4o-mini"}', None, 400, "invalid_request"),
    ("wrong type", b'{"model": "openai/gpt-4o-mini", "messages": "hello"}', None, 400, "invalid_request"),
    (
        "wrong type of n",
        b'{"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "n": "2"}',
        None,
        400,
        "invalid_request",
    ),
    (
        "max_tokens above any model's output",
        b'{"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1000000001}',
        None,
        400,
        "invalid_request",
    ),
    (
        "unknown model",
        b'{"model": "openai/nope", "messages": [{"role": "user", "content": "x"}]}',
        None,
        404,
        "model_not_found",
    ),
    (
        "bad key",
        b'{"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}',
        "thk_bad",
        401,
        "invalid_api_key",
    ),
]


@pytest.mark.parametrize(("case", "body", "key", "status", "code"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_the_right_status_and_shape_and_no_charge(
    served: Served, case: str, body: bytes, key: str | None, status: int, code: str
) -> None:
    before = served.gateway.balance(served.account)
    requests_before = len(served.upstream.requests)
    response = post(served, body, key)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["message"]
    assert response.headers["x-request-id"]
    assert len(served.upstream.requests) == requests_before  # never reached the provider
    after = served.gateway.balance(served.account)
    assert (after["balance"], after["held"]) == (before["balance"], before["held"])


def test_an_oversized_body_gets_413(served: Served) -> None:
    body = (
        b'{"model": "%s", "messages": [{"role": "user", "content": "' % MODEL.encode()
        + b"x" * (11 * 1024 * 1024)
        + b'"}]}'
    )
    response = post(served, body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_unknown_paths_answer_in_openai_shape(served: Served) -> None:
    response = httpx.get(served.gateway.url + "/v1/nothing-here", timeout=10)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/v1/embeddings"])
def test_a_hot_path_with_another_method_still_gets_405_in_openai_shape(served: Served, path: str) -> None:
    """The hot routes (adapters/http/hot_routes.py) take only their exact method and path."""
    response = httpx.get(served.gateway.url + path, headers={"authorization": f"Bearer {served.api_key}"}, timeout=10)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response.headers["x-request-id"]


def test_a_user_key_cannot_reach_the_admin_api(served: Served) -> None:
    response = httpx.get(
        served.gateway.url + "/admin/v1/accounts", headers={"authorization": f"Bearer {served.api_key}"}, timeout=10
    )
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
