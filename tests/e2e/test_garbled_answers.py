"""A provider's garbled answer is still the provider's failure through the real server
(issue 14): a 200 whose body is not a chat completion is answered 502
``upstream_bad_response``, recorded so and not charged — now that only network errors,
timeouts and ``MalformedUpstreamAnswer`` count as the provider's read failures."""

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import MODEL, UPSTREAM_KEY, configure
from tests.fakes.openai_scripts import Scripted
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import Gateway


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, FakeOpenAIUpstream, str]]:
    upstream = FakeOpenAIUpstream(api_key=UPSTREAM_KEY).start()
    gateway = Gateway.initialised(tmp_path_factory.mktemp("garbled"))
    key = configure(gateway, upstream, "acme", "5")
    gateway.start()
    yield gateway, upstream, key
    gateway.stop()
    upstream.stop()


@pytest.mark.parametrize("body", ["<html>not json</html>", "[1, 2]"], ids=["not-json", "not-an-object"])
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
