"""A provider's garbled answer is still the provider's failure through the real server
(issue 14): a 200 whose body is not a chat completion is answered 502
``upstream_bad_response``, recorded so and not charged — now that only network errors,
timeouts and ``MalformedUpstreamAnswer`` count as the provider's read failures. The same
through the Anthropic ingress (``/v1/messages``): never charged for an answer it cannot
give. A stream chunk the provider garbled after some output is a broken stream, through
both ingresses: an error event, a 502 ``upstream_stream_broken`` record, and only the
output delivered charged."""

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from domain.estimation import tokens_for_chars
from tests.e2e.conftest import MODEL, OUTPUT_RATE, configured_gateway
from tests.fakes.openai_scripts import Scripted
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import Gateway


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, FakeOpenAIUpstream, str]]:
    yield from configured_gateway(tmp_path_factory, "garbled", "5")


@pytest.mark.parametrize(
    "body",
    [
        "<html>not json</html>",
        "[1, 2]",
        '{"id": "x", "choices": {"0": {"message": {"content": "hi"}}}}',
        '{"id": "x", "choices": [{"index": 0, "message": ["hi"]}]}',
    ],
    ids=["not-json", "not-an-object", "choices-not-a-list", "a-message-not-an-object"],
)
def test_a_plain_answer_the_provider_garbled_is_a_502_recorded_and_not_charged(setup, body: str) -> None:
    gateway, upstream, key = setup
    upstream.script(Scripted.raw(200, body, content_type="application/json"))
    before = gateway.balance("acme")["balance"]
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert response.status_code == 502
    assert response.json()["error"] == {
        "message": "the provider sent an unreadable response",
        "type": "upstream_error",
        "param": None,
        "code": "upstream_bad_response",
    }
    request_id = response.headers["x-request-id"]
    row = next(r for r in gateway.admin_json("GET", "/requests")["data"] if r["request_id"] == request_id)
    assert (row["status"], row["charge"]) == (502, 0)
    assert gateway.balance("acme")["balance"] == before


def record(gateway: Gateway, request_id: str) -> dict[str, Any]:
    return next(r for r in gateway.admin_json("GET", "/requests")["data"] if r["request_id"] == request_id)


def test_a_plain_message_whose_answer_has_no_choice_is_a_502_through_the_anthropic_ingress_and_not_charged(
    setup,
) -> None:
    gateway, upstream, key = setup
    answer = {
        "id": "x",
        "object": "chat.completion",
        "choices": [],
        "usage": {"prompt_tokens": 9, "completion_tokens": 4},
    }
    upstream.script(Scripted.raw(200, orjson.dumps(answer).decode(), content_type="application/json"))
    before = gateway.balance("acme")["balance"]
    client = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as raised:
        client.messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 502
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "api_error", "message": "the provider sent an unreadable response"},
    }
    row = record(gateway, raised.value.response.headers["x-request-id"])
    assert (row["status"], row["charge"]) == (502, 0)
    balance = gateway.balance("acme")
    assert (balance["balance"], balance["held"]) == (before, 0)


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {"id": "chatcmpl-g", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]}


# The role chunk, two words, then a chunk whose choice is not an object, then what would have followed.
GARBLED_STREAM = (
    "".join(
        f"data: {orjson.dumps(payload).decode()}\n\n"
        for payload in (
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "one"}),
            chunk({"content": " two"}),
            {"id": "chatcmpl-g", "object": "chat.completion.chunk", "choices": ["garbled"]},
            chunk({"content": " three"}),
            chunk({}, "stop"),
        )
    )
    + "data: [DONE]\n\n"
)
DELIVERED = "one two"


def sse_data(response: httpx.Response) -> list[Any]:
    return [orjson.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_chunk_the_provider_garbled_mid_stream_ends_in_an_error_and_charges_only_the_output_delivered(
    setup, path: str
) -> None:
    gateway, upstream, key = setup
    upstream.script(Scripted.raw(200, GARBLED_STREAM, content_type="text/event-stream"))
    before = gateway.balance("acme")["balance"]
    body = {"model": MODEL, "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "go"}]}
    with httpx.stream(
        "POST", gateway.url + path, headers={"authorization": f"Bearer {key}"}, json=body, timeout=30
    ) as response:
        assert response.status_code == 200
        data = sse_data(response)
        request_id = response.headers["x-request-id"]
    if path == "/v1/chat/completions":
        delivered = "".join(c["delta"].get("content") or "" for d in data for c in d.get("choices", ()))
        assert data[-1]["error"]["code"] == "upstream_stream_broken"
    else:
        delivered = "".join(d["delta"]["text"] for d in data if d["type"] == "content_block_delta")
        assert data[-1] == {
            "type": "error",
            "error": {"type": "api_error", "message": "the provider ended the stream early"},
        }
    assert delivered == DELIVERED
    charge = tokens_for_chars(len(DELIVERED)) * OUTPUT_RATE
    row = record(gateway, request_id)
    assert (row["status"], row["charge"], row["usage_source"]) == (502, charge, "estimated")
    assert before - gateway.balance("acme")["balance"] == charge
    assert gateway.balance("acme")["held"] == 0
