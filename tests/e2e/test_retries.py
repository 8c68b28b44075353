"""Retries of the same credential on the real server (issue 16): a provider added with
``--retries`` serves a 503-then-200 through its one credential, the caller charged once and
the failed attempt recorded; ``providers update`` reaches the running server (no retries:
the 503 is the answer); the admin API's ``PATCH`` does too. The backoff base is 1 ms, so the
server's real sleep is negligible; the delays themselves are tested through the injected
sleep (tests/unit/test_upstream_retries.py)."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from tests.fakes.openai_scripts import Scripted
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import Gateway, cli

KEY = "sk-retries-e2e-0000000aaaa"
MESSAGES = [{"role": "user", "content": "hello"}]


@dataclass
class Setup:
    gateway: Gateway
    upstream: FakeOpenAIUpstream
    key: str

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.url + "/v1", api_key=self.key, max_retries=0)

    def balance(self) -> int:
        return self.gateway.balance("acme")["balance"]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    upstream = FakeOpenAIUpstream(api_key=KEY).start()
    gateway = Gateway.initialised(tmp_path)
    env = gateway.env
    added = cli(
        env,
        "providers",
        "add",
        "primary",
        "--kind",
        "openai-compatible",
        "--base-url",
        upstream.base_url,
        "--api-key-stdin",
        "--retries",
        "1",
        "--retry-base-ms",
        "1",
        stdin=KEY,
    )
    assert (added["retries"], added["retry_base_ms"]) == (1, 1)
    cli(env, "prices", "set", "primary/gpt-4o", "--input", "10", "--output", "30")
    cli(env, "accounts", "create", "acme", "--starter-credits", "100")
    key = cli(env, "keys", "issue", "acme")["key"]
    gateway.start()
    yield Setup(gateway, upstream, key)
    gateway.stop()
    upstream.stop()


def test_a_503_is_retried_on_the_same_credential_and_charged_once(setup: Setup) -> None:
    setup.upstream.script(Scripted.error(503, "overloaded"))
    before = setup.balance()
    raw = setup.client().chat.completions.with_raw_response.create(model="primary/gpt-4o", messages=MESSAGES)
    usage = raw.parse().usage
    assert [r.headers["authorization"] for r in setup.upstream.requests] == [f"Bearer {KEY}"] * 2
    charge = usage.prompt_tokens * 10_000 + usage.completion_tokens * 30_000
    assert int(raw.headers["x-tallyhub-charge-nanocredits"]) == charge == before - setup.balance()
    receipt = setup.gateway.admin_json("GET", f"/requests/{raw.headers['x-request-id']}")
    assert receipt["charge"] == charge
    assert [(a["status"], a["error_code"], a.get("retry")) for a in receipt["attempts"]] == [
        (503, "upstream_unavailable", None)
    ]


def test_a_failure_on_the_last_retry_is_the_answer_and_the_retries_are_recorded(setup: Setup) -> None:
    setup.upstream.script(Scripted.error(503, "overloaded"), Scripted.error(503, "still overloaded"))
    before = setup.balance()
    with pytest.raises(openai.APIStatusError) as caught:
        setup.client().chat.completions.create(model="primary/gpt-4o", messages=MESSAGES)
    assert caught.value.status_code == 503 and len(setup.upstream.requests) == 2
    assert setup.balance() == before and setup.gateway.balance("acme")["held"] == 0


def test_providers_update_and_the_admin_api_reach_the_running_server(setup: Setup) -> None:
    updated = cli(setup.gateway.env, "providers", "update", "primary", "--retries", "0")
    assert updated["retries"] == 0
    setup.upstream.script(Scripted.error(503, "overloaded"))
    with pytest.raises(openai.APIStatusError) as caught:
        setup.client().chat.completions.create(model="primary/gpt-4o", messages=MESSAGES)
    assert caught.value.status_code == 503 and len(setup.upstream.requests) == 1
    patched = setup.gateway.admin_json("PATCH", "/providers/primary", json={"retries": 1})
    assert patched["retries"] == 1 and setup.gateway.admin_json("GET", "/providers/primary")["retries"] == 1
    setup.upstream.script(Scripted.error(503, "overloaded"))
    setup.client().chat.completions.create(model="primary/gpt-4o", messages=MESSAGES)
    assert len(setup.upstream.requests) == 3
