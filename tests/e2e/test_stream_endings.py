"""However a stream ends, it is billed once: a provider that breaks mid-stream gives the
client an error event (not a clean finish) and charges only the output delivered; a
client that disconnects cancels the upstream call and pays for what was produced."""

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from domain.estimation import tokens_for_chars
from tests.e2e.conftest import INPUT_RATE, MODEL, OUTPUT_RATE, UPSTREAM_KEY, configure
from tests.fakes.openai_scripts import Scripted
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import Gateway


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Gateway, FakeOpenAIUpstream, str]]:
    upstream = FakeOpenAIUpstream(api_key=UPSTREAM_KEY, reply_text="one two three four five six seven eight").start()
    gateway = Gateway.initialised(tmp_path)
    key = configure(gateway, upstream, "acme", "5")
    gateway.start()
    yield gateway, upstream, key
    gateway.stop()
    upstream.stop()


def requests_of(gateway: Gateway) -> list[dict]:
    return gateway.admin_json("GET", "/requests")["data"]


def test_a_stream_broken_by_the_provider_ends_in_an_error_and_charges_only_what_was_delivered(setup) -> None:
    gateway, upstream, key = setup
    upstream.script(Scripted.break_stream_after(2))
    before = gateway.balance("acme")["balance"]
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "go"}], stream=True
        ):
            received.extend(choice.delta.content or "" for choice in chunk.choices)
    assert "ended the stream early" in str(caught.value)
    delivered = "".join(received)
    assert delivered == "one two"
    charge = tokens_for_chars(len(delivered)) * OUTPUT_RATE
    assert before - gateway.balance("acme")["balance"] == charge
    row = requests_of(gateway)[0]
    assert (row["status"], row["charge"], row["usage_source"]) == (502, charge, "estimated")


def test_a_client_that_disconnects_is_charged_once_for_what_was_produced(setup) -> None:
    gateway, upstream, key = setup
    upstream.script(Scripted.chunk_delay(0.3))
    body = orjson.dumps({"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "go slowly"}]})
    before = gateway.balance("acme")["balance"]
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    with httpx.stream(
        "POST", gateway.url + "/v1/chat/completions", content=body, headers=headers, timeout=30
    ) as response:
        frames = []
        for line in response.iter_lines():
            if line.startswith("data: "):
                frames.append(orjson.loads(line[6:]))
            if len(frames) == 3:  # the role chunk and two words
                break
    assert upstream.wait_until(lambda: upstream.requests and upstream.requests[-1].disconnected, timeout=10)
    deadline = time.monotonic() + 10
    while not requests_of(gateway) and time.monotonic() < deadline:
        time.sleep(0.1)
    row = requests_of(gateway)[0]
    assert row["status"] == 499 and row["usage_source"] == "estimated"
    produced_tokens = row["output_tokens"]
    assert 2 <= produced_tokens <= 4  # what the gateway relayed before it noticed; never the whole answer
    expected = tokens_for_chars(len(body)) * INPUT_RATE + produced_tokens * OUTPUT_RATE
    assert row["charge"] == expected
    assert before - gateway.balance("acme")["balance"] == expected
    assert gateway.balance("acme")["held"] == 0


def test_a_provider_that_reports_no_usage_is_charged_an_estimate_and_says_so(setup) -> None:
    gateway, upstream, key = setup
    upstream.script(Scripted.no_usage())
    body = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "count"}]})
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        content=body,
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200 and "usage" not in response.json()
    text = response.json()["choices"][0]["message"]["content"]
    expected = tokens_for_chars(len(body)) * INPUT_RATE + tokens_for_chars(len(text)) * OUTPUT_RATE
    assert response.headers["x-tallyhub-usage-source"] == "estimated"
    assert int(response.headers["x-tallyhub-charge-nanocredits"]) == expected
    row = requests_of(gateway)[0]
    assert (row["usage_source"], row["charge"]) == ("estimated", expected)
