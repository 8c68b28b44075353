"""Failover before the first byte: to the next credential, then to an alias's fallback
model, only on retryable failures; a refused credential is disabled and re-probed; a
429 cools a credential down. Whatever happens, the caller is charged at most once, and
only for the attempt that served it."""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.fakes.openai_scripts import Scripted
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import Gateway, cli

KEY_A, KEY_B = "sk-credential-a-000000aaaa", "sk-credential-b-000000bbbb"
MESSAGES = [{"role": "user", "content": "hello"}]


@dataclass
class Setup:
    gateway: Gateway
    primary: FakeOpenAIUpstream
    backup: FakeOpenAIUpstream
    key: str

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.url + "/v1", api_key=self.key, max_retries=0)

    def balance(self) -> int:
        return self.gateway.balance("acme")["balance"]

    def keys_seen(self, upstream: FakeOpenAIUpstream) -> list[str]:
        return [r.headers["authorization"].removeprefix("Bearer ") for r in upstream.requests]

    def receipt(self, request_id: str) -> dict:
        return self.gateway.admin_json("GET", f"/requests/{request_id}")


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    primary = FakeOpenAIUpstream(api_key=KEY_A, also_accept=(KEY_B,)).start()
    backup = FakeOpenAIUpstream(api_key="sk-backup-0000000000cccc").start()
    gateway = Gateway.initialised(tmp_path, TALLYHUB_PROBE_INTERVAL_SECONDS="1")
    env = gateway.env
    cli(
        env,
        "providers",
        "add",
        "primary",
        "--kind",
        "openai-compatible",
        "--base-url",
        primary.base_url,
        "--api-key-stdin",
        stdin=KEY_A,
    )
    cli(env, "providers", "add-credential", "primary", "--api-key-stdin", stdin=KEY_B)
    cli(
        env,
        "providers",
        "add",
        "backup",
        "--kind",
        "openai-compatible",
        "--base-url",
        backup.base_url,
        "--api-key-stdin",
        stdin="sk-backup-0000000000cccc",
    )
    cli(env, "prices", "set", "primary/gpt-4o", "--input", "10", "--output", "30")
    cli(env, "prices", "set", "backup/gpt-4o-mini", "--input", "1", "--output", "2")
    cli(env, "aliases", "set", "smart", "primary/gpt-4o", "--fallback", "backup/gpt-4o-mini")
    cli(env, "accounts", "create", "acme", "--starter-credits", "100")
    key = cli(env, "keys", "issue", "acme")["key"]
    gateway.start()
    yield Setup(gateway, primary, backup, key)
    gateway.stop()
    primary.stop()
    backup.stop()


def test_a_500_from_one_credential_is_served_by_the_other_and_charged_once(setup: Setup) -> None:
    setup.primary.script(Scripted.error(500, "boom"))
    before = setup.balance()
    raw = setup.client().chat.completions.with_raw_response.create(model="primary/gpt-4o", messages=MESSAGES)
    usage = raw.parse().usage
    keys = setup.keys_seen(setup.primary)
    assert len(keys) == 2 and set(keys) == {KEY_A, KEY_B}
    charge = usage.prompt_tokens * 10_000 + usage.completion_tokens * 30_000
    assert int(raw.headers["x-tallyhub-charge-nanocredits"]) == charge
    assert before - setup.balance() == charge
    receipt = setup.receipt(raw.headers["x-request-id"])
    assert receipt["status"] == 200 and receipt["charge"] == charge
    assert [(a["status"], a["error_code"]) for a in receipt["attempts"]] == [(502, "upstream_error")]


def test_a_stream_fails_over_before_its_first_byte(setup: Setup) -> None:
    setup.primary.script(Scripted.error(503, "overloaded"))
    chunks = list(
        setup.client().chat.completions.create(
            model="primary/gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage.model_extra["cost_nanocredits"] > 0
    assert len(setup.primary.requests) == 2


def test_a_429_cools_the_credential_down_for_its_retry_after(setup: Setup) -> None:
    setup.primary.script(Scripted.error(429, "slow down", retry_after=60))
    client = setup.client()
    for _ in range(5):
        client.chat.completions.create(model="primary/gpt-4o", messages=MESSAGES)
    keys = setup.keys_seen(setup.primary)
    limited, others = keys[0], keys[1:]
    assert len(keys) == 6 and limited not in others  # never tried again while cooling down


def test_the_alias_falls_back_to_the_next_model_at_its_own_price(setup: Setup) -> None:
    setup.primary.script(Scripted.error(502, "bad gateway"), Scripted.error(500, "boom"))
    before = setup.balance()
    raw = setup.client().chat.completions.with_raw_response.create(model="smart", messages=MESSAGES)
    usage = raw.parse().usage
    charge = usage.prompt_tokens * 1_000 + usage.completion_tokens * 2_000  # backup's rates
    assert int(raw.headers["x-tallyhub-charge-nanocredits"]) == charge == before - setup.balance()
    assert setup.backup.requests[-1].json["model"] == "gpt-4o-mini"
    receipt = setup.receipt(raw.headers["x-request-id"])
    assert receipt["model"] == "backup/gpt-4o-mini" and receipt["requested_model"] == "smart"
    assert len(receipt["attempts"]) == 2


def test_a_caller_error_is_not_retried_and_not_charged(setup: Setup) -> None:
    setup.primary.script(Scripted.error(400, "This model's maximum context length is 8192 tokens"))
    before = setup.balance()
    with pytest.raises(openai.BadRequestError) as caught:
        setup.client().chat.completions.create(model="smart", messages=MESSAGES)
    assert "maximum context length" in caught.value.message
    assert len(setup.primary.requests) == 1 and not setup.backup.requests
    assert setup.balance() == before and setup.gateway.balance("acme")["held"] == 0


def test_when_every_attempt_fails_the_caller_gets_the_last_error_and_pays_nothing(setup: Setup) -> None:
    setup.primary.script(*[Scripted.error(500, "down")] * 2)
    before = setup.balance()
    with pytest.raises(openai.APIStatusError) as caught:
        setup.client().chat.completions.create(model="primary/gpt-4o", messages=MESSAGES)
    assert caught.value.status_code == 502
    assert setup.balance() == before and setup.gateway.balance("acme")["held"] == 0


def test_a_refused_credential_is_disabled_then_re_enabled_by_the_probe(setup: Setup) -> None:
    # KEY_B stops being accepted: the provider answers 401 to it.
    setup.primary.accepted_keys = frozenset({KEY_A})
    client = setup.client()
    refused: list[dict] = []
    for _ in range(64):  # credentials are tried in weighted random order: until KEY_B has been tried
        client.chat.completions.create(model="primary/gpt-4o", messages=MESSAGES)  # served by KEY_A
        providers = {p["name"]: p for p in cli(setup.gateway.env, "providers", "list")["data"]}
        refused = [c for c in providers["primary"]["credentials"] if not c["enabled"]]
        if refused:
            break
    assert len(refused) == 1 and refused[0]["disabled_automatically"] and refused[0]["hint"] == "…bbbb"
    setup.primary.accepted_keys = frozenset({KEY_A, KEY_B})  # the provider accepts it again
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        providers = {p["name"]: p for p in cli(setup.gateway.env, "providers", "list")["data"]}
        if all(c["enabled"] for c in providers["primary"]["credentials"]):
            break
        time.sleep(0.5)
    assert all(c["enabled"] for c in providers["primary"]["credentials"])


def test_the_models_list_includes_aliases(setup: Setup) -> None:
    ids = [m.id for m in setup.client().models.list()]
    assert ids == ["backup/gpt-4o-mini", "primary/gpt-4o", "smart"]


def test_an_upstream_404_for_a_model_the_provider_lacks_is_a_clear_404(setup: Setup) -> None:
    setup.primary.script(Scripted.error(404, "The model `gpt-4o` does not exist", code="model_not_found"))
    response = httpx.post(
        setup.gateway.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {setup.key}"},
        json={"model": "primary/gpt-4o", "messages": MESSAGES},
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
