"""The end-to-end golden cases through the HTTP app (in process, an in-memory ledger)
against the fake OpenAI and Anthropic upstreams on loopback: the charge on the ledger,
the usage each client is shown, and what the upstream saw.

- case 2: Anthropic's 5-minute cache writes, through chat ingress (plain and streamed) and
  /v1/messages ingress: charged at the write rate, the same on every path;
- case 4: /v1/messages ingress → an OpenAI upstream, and chat ingress → an Anthropic
  upstream: the usage each client sees is never negative, its total is the sum of its parts,
  and the charge is the same Usage either way;
- case 6: ``service_tier`` requested ``priority``, answered ``default``: default rates;
- case 7: images per image without token counts, at the model's token rates with them, 0 when
  the generation failed;
- case 8: a stream cut after 2 KB of text: the estimate is held to ``max_tokens`` (or the
  model's output limit), marked estimated and ``output_capped``;
- case 10: an unknown model or a ``-latest`` name without a price: refused in credits mode
  before any upstream call; served with ``price_missing`` in track mode."""

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from adapters.bootstrap import build_services, in_memory_ledger
from adapters.settings import Settings
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from domain.request_record import RequestDetails
from domain.usage import Usage
from tests.fakes.anthropic_upstream import AnthropicScript, FakeAnthropicUpstream
from tests.fakes.clock import FakeClock
from tests.fakes.openai_scripts import Scripted
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.unit.golden_usage.prices import PRICE
from tests.unit.test_key_http import auth, in_process_app

OPENAI_SECRET = "sk-golden-openai-secret-0001"
ANTHROPIC_SECRET = "sk-ant-golden-secret-0001"
GPT = "openai/o4-mini"
CLAUDE = "anthropic/claude-sonnet-4-5"
CAPPED = "openai/gpt-capped"  # its output limit is 50 tokens
DALLE = "openai/dall-e-3"
GPT_IMAGE = "openai/gpt-image-1"
START = 10**13
# Case 2 needs a prompt of at least 159,223 tokens within the request's bound (body bytes + 4,096)
BIG_PROMPT = "cached context " * 11_000  # 165,000 bytes
CASE_1_USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 200,
    "total_tokens": 1200,
    "prompt_tokens_details": {"cached_tokens": 800, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 150, "audio_tokens": 0},
}
CASE_2_SCRIPT = dict(input_tokens=6, ephemeral_5m_input_tokens=159_217, cache_read_input_tokens=0, output_tokens=2745)


@dataclass
class Gateway:
    client: TestClient
    ledger: Ledger
    openai: FakeOpenAIUpstream
    anthropic: FakeAnthropicUpstream
    key: str

    def chat(self, body: dict[str, Any]) -> Any:
        return self.client.post("/v1/chat/completions", headers=auth(self.key), json=body)

    def messages(self, body: dict[str, Any]) -> Any:
        headers = {"x-api-key": self.key, "anthropic-version": "2023-06-01"}
        return self.client.post("/v1/messages", headers=headers, json=body)

    def record(self, response: Any) -> RequestDetails:
        return self.ledger.get_request_record(response.headers["x-request-id"]).details

    def balance(self) -> int:
        return self.ledger.get_account("acme").balance


def make_gateway(mode: str) -> Iterator[Gateway]:
    openai = FakeOpenAIUpstream(api_key=OPENAI_SECRET).start()
    anthropic = FakeAnthropicUpstream(api_key=ANTHROPIC_SECRET).start()
    ledger = in_memory_ledger(clock=FakeClock())
    ledger.initialise()
    app = in_process_app(build_services(Settings(billing_mode=mode), ledger=ledger))  # type: ignore[arg-type]
    registry = ProviderRegistry(ledger)
    registry.register_provider("openai", "openai", base_url=openai.base_url, region=None, secret=OPENAI_SECRET)
    registry.register_provider(
        "anthropic", "anthropic", base_url=anthropic.base_url, region=None, secret=ANTHROPIC_SECRET
    )
    prices = Prices(ledger)
    prices.set_price(GPT, PRICE)
    prices.set_price(CLAUDE, PRICE)
    prices.set_price(CAPPED, replace(PRICE, max_output_tokens=50))
    prices.set_price(DALLE, price_from_credits(input="0", output="0", per_image="0.04"))
    prices.set_price(GPT_IMAGE, price_from_credits(input="5", output="40"))
    Accounts(ledger).create_account("acme", starter_credits=START)
    key = ApiKeys(ledger).issue_api_key("acme").plaintext
    try:
        with TestClient(app) as client:
            yield Gateway(client, ledger, openai, anthropic, key)
    finally:
        ledger.close()
        openai.stop()
        anthropic.stop()


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    yield from make_gateway("credits")


@pytest.fixture
def tracking() -> Iterator[Gateway]:
    yield from make_gateway("track")


def sse_data(text: str) -> list[Any]:
    """The JSON payloads of an SSE body ([DONE] left out)."""
    payloads = []
    for line in text.splitlines():
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            payloads.append(orjson.loads(line[5:].strip()))
    return payloads


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# ---------------------------------------------------------------- case 2


def test_case_2_anthropic_cache_writes_are_charged_at_the_5_minute_rate_on_every_path(gateway: Gateway) -> None:
    expected = Usage(input_tokens=159_223, cache_write_5m_tokens=159_217, output_tokens=2745, service_tier="standard")
    charges = []
    for send, stream in ((gateway.chat, False), (gateway.chat, True), (gateway.messages, False)):
        gateway.anthropic.script(AnthropicScript.usage(**CASE_2_SCRIPT))
        before = gateway.balance()
        response = send({"model": CLAUDE, "max_tokens": 4000, "messages": user(BIG_PROMPT), "stream": stream})
        assert response.status_code == 200, response.text
        details = gateway.record(response)
        assert details.usage == expected
        charges.append(details.charge)
        assert before - gateway.balance() == details.charge
    # 6 × 2.0 + 159,217 × 2.6 + 2,745 × 10.0 credits per 1M; the bug (writes as plain input) charged 345,896,000
    assert charges == [441_426_200] * 3


# ---------------------------------------------------------------- case 4


def _never_negative(usage: dict[str, Any]) -> None:
    for key, value in usage.items():
        if isinstance(value, dict):
            _never_negative(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            assert value >= 0, f"{key} = {value}"


def test_case_4_messages_ingress_to_an_openai_upstream_shows_anthropics_shape_and_charges_the_same_usage(
    gateway: Gateway,
) -> None:
    gateway.openai.script(Scripted.raw_usage(CASE_1_USAGE))
    through_messages = gateway.messages({"model": GPT, "max_tokens": 500, "messages": user("What is 6 × 7?")})
    assert through_messages.status_code == 200, through_messages.text
    shown = through_messages.json()["usage"]
    _never_negative(shown)
    assert shown == {
        "input_tokens": 200,
        "cache_read_input_tokens": 800,
        "output_tokens": 200,
        "output_tokens_details": {"thinking_tokens": 150},
    }

    gateway.openai.script(Scripted.raw_usage(CASE_1_USAGE))
    through_chat = gateway.chat({"model": GPT, "max_tokens": 500, "messages": user("What is 6 × 7?")})
    assert through_chat.status_code == 200, through_chat.text
    seen = through_chat.json()["usage"]
    assert seen["total_tokens"] == seen["prompt_tokens"] + seen["completion_tokens"]

    one, other = gateway.record(through_messages), gateway.record(through_chat)
    assert one.usage == other.usage
    assert one.charge == other.charge == 2_710_000  # golden case 1: 200 input, 800 cached, 50 output, 150 reasoning


def test_case_4_an_upstream_reporting_more_cached_than_prompt_tokens_never_shows_a_negative_count(
    gateway: Gateway,
) -> None:
    garbled = {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105}
    garbled["prompt_tokens_details"] = {"cached_tokens": 500, "cache_write_tokens": 700}
    for stream in (False, True):
        gateway.openai.script(Scripted.raw_usage(garbled))
        response = gateway.messages({"model": GPT, "max_tokens": 50, "messages": user("hi"), "stream": stream})
        assert response.status_code == 200, response.text
        if stream:
            deltas = [event for event in sse_data(response.text) if event.get("type") == "message_delta"]
            shown = deltas[-1]["usage"]
        else:
            shown = response.json()["usage"]
        _never_negative(shown)
        assert (
            shown["input_tokens"] + shown["cache_read_input_tokens"] + shown.get("cache_creation_input_tokens", 0)
            == 100
        )
        assert gateway.record(response).charge >= 0


def test_case_4_chat_ingress_to_an_anthropic_upstream_shows_totals_that_are_the_sum_of_their_parts(
    gateway: Gateway,
) -> None:
    for stream in (False, True):
        gateway.anthropic.script(AnthropicScript.usage(**{**CASE_2_SCRIPT, "cache_read_input_tokens": 300}))
        body = {"model": CLAUDE, "max_tokens": 4000, "messages": user(BIG_PROMPT), "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        response = gateway.chat(body)
        assert response.status_code == 200, response.text
        seen = sse_data(response.text)[-1]["usage"] if stream else response.json()["usage"]
        _never_negative(seen)
        assert seen["prompt_tokens"] == 6 + 300 + 159_217
        assert seen["total_tokens"] == seen["prompt_tokens"] + seen["completion_tokens"]
        details = seen["prompt_tokens_details"]
        assert (details["cached_tokens"], details["cache_write_tokens"]) == (300, 159_217)
        assert gateway.record(response).usage == Usage(
            input_tokens=159_523,
            cached_input_tokens=300,
            cache_write_5m_tokens=159_217,
            output_tokens=2745,
            service_tier="standard",
        )
        assert gateway.record(response).charge == 441_426_200 + 300 * 200  # + 300 cache reads at 0.2


# ---------------------------------------------------------------- case 6


@pytest.mark.parametrize("stream", [False, True])
def test_case_6_priority_requested_default_answered_is_charged_at_default_rates(gateway: Gateway, stream: bool) -> None:
    gateway.openai.script(Scripted.raw_usage(CASE_1_USAGE) | Scripted.answered_tier("default"))
    body = {"model": GPT, "messages": user("hi"), "service_tier": "priority", "stream": stream}
    response = gateway.chat(body)
    assert response.status_code == 200, response.text
    assert gateway.openai.requests[-1].json["service_tier"] == "priority"  # asked for, as the caller sent it
    details = gateway.record(response)
    assert details.usage is not None and details.usage.service_tier == "default"
    assert details.charge == 2_710_000

    gateway.openai.script(Scripted.raw_usage(CASE_1_USAGE) | Scripted.answered_tier("priority"))
    response = gateway.chat(body)
    assert gateway.record(response).charge == 4_530_000  # served at priority: its rates


# ---------------------------------------------------------------- case 7


def test_case_7_images_per_image_without_tokens_at_token_rates_with_them_and_nothing_when_failed(
    gateway: Gateway,
) -> None:
    post = gateway.client.post
    dalle = post("/v1/images/generations", headers=auth(gateway.key), json={"model": DALLE, "prompt": "a fox", "n": 2})
    assert dalle.status_code == 200, dalle.text
    assert gateway.record(dalle).usage == Usage(images=2)
    assert gateway.record(dalle).charge == 2 * 40_000_000  # 0.04 credits an image

    prompt = "a red fox in the snow, watercolour"  # 34 characters: the fake reports 8 input tokens
    gpt_image = post("/v1/images/generations", headers=auth(gateway.key), json={"model": GPT_IMAGE, "prompt": prompt})
    assert gpt_image.status_code == 200, gpt_image.text
    assert gateway.record(gpt_image).usage == Usage(input_tokens=8, output_tokens=272, images=1)
    assert gateway.record(gpt_image).charge == 8 * 5_000 + 272 * 40_000  # 5 and 40 credits per 1M tokens

    before = gateway.balance()
    gateway.openai.script(Scripted.error(500))
    failed = post("/v1/images/generations", headers=auth(gateway.key), json={"model": DALLE, "prompt": "a fox"})
    assert failed.status_code >= 500
    assert gateway.record(failed).charge == 0 and gateway.record(failed).usage is None
    assert gateway.balance() == before


# ---------------------------------------------------------------- case 8

LONG_WORDS = " " + "x" * 39  # one fake token: 40 characters
LONG_REPLY = LONG_WORDS * 80  # 3,200 characters


@pytest.mark.parametrize(
    ("model", "max_tokens", "cap"),
    [(GPT, 100, 100), (CAPPED, None, 50)],
    ids=["max_tokens", "model_output_limit"],
)
def test_case_8_a_stream_cut_after_2kb_is_estimated_within_the_output_limit(
    gateway: Gateway, model: str, max_tokens: int | None, cap: int
) -> None:
    gateway.openai.script(Scripted(reply_text=LONG_REPLY) | Scripted.break_stream_after(55))  # 2,200 characters
    body: dict[str, Any] = {"model": model, "messages": user("write a lot"), "stream": True}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    response = gateway.chat(body)
    delivered = "".join(
        choice["delta"].get("content") or ""
        for chunk in sse_data(response.text)
        for choice in chunk.get("choices") or []
    )
    assert len(delivered) == 2200  # ceil(2200 / 4) = 550 tokens by the estimate's rule
    details = gateway.record(response)
    assert details.usage == Usage(output_tokens=cap, source="estimated", flags=("output_capped",))
    assert details.charge == cap * 10_000  # the output delivered only, at 10 credits per 1M


# ---------------------------------------------------------------- case 10


@pytest.mark.parametrize("model", ["openai/gpt-unknown", "anthropic/claude-sonnet-4-5-latest"])
def test_case_10_an_unpriced_model_is_refused_in_credits_mode_before_any_upstream_call(
    gateway: Gateway, model: str
) -> None:
    before = gateway.balance()
    for send in (gateway.chat, gateway.messages):
        response = send({"model": model, "max_tokens": 10, "messages": user("hi")})
        assert response.status_code == 404, response.text
    assert gateway.openai.requests == [] and gateway.anthropic.requests == []
    assert gateway.balance() == before


@pytest.mark.parametrize("model", ["openai/gpt-unknown", "anthropic/claude-sonnet-4-5-latest"])
def test_case_10_an_unpriced_model_is_served_with_price_missing_in_track_mode(tracking: Gateway, model: str) -> None:
    response = tracking.chat({"model": model, "max_tokens": 10, "messages": user("hi")})
    assert response.status_code == 200, response.text
    assert response.headers["x-tallyhub-price-missing"] == "true"
    details = tracking.record(response)
    assert details.priced is False and details.charge == 0
    assert len(tracking.openai.requests) + len(tracking.anthropic.requests) == 1


# ---------------------------------------------------------------- case 9


@pytest.mark.parametrize("stream", [False, True])
def test_case_9_an_unreadable_completion_count_is_estimated_from_the_text_not_charged_as_zero(
    gateway: Gateway, stream: bool
) -> None:
    garbled = {"prompt_tokens": 12, "completion_tokens": None}  # and no total_tokens to derive it from
    gateway.openai.script(Scripted.raw_usage(garbled) | Scripted(reply_text="x" * 400))
    response = gateway.chat({"model": GPT, "messages": user("hi"), "stream": stream})
    assert response.status_code == 200, response.text
    details = gateway.record(response)
    assert details.usage == Usage(
        input_tokens=12,
        output_tokens=100,
        source="estimated",
        service_tier="default",
        flags=("field_invalid", "total_derived"),
    )
    assert details.charge == 12 * 2_000 + 100 * 10_000  # 400 characters: 100 tokens estimated


# ---------------------------------------------------------------- the official SDKs read what they are shown


def test_case_2_the_anthropic_sdk_reads_the_cache_writes_a_messages_client_is_shown(gateway: Gateway) -> None:
    import anthropic

    sdk = anthropic.Anthropic(base_url=str(gateway.client.base_url), api_key=gateway.key, http_client=gateway.client)
    for stream in (False, True):
        gateway.anthropic.script(AnthropicScript.usage(**CASE_2_SCRIPT))
        request = {"model": CLAUDE, "max_tokens": 4000, "messages": user(BIG_PROMPT)}
        if stream:
            with sdk.messages.stream(**request) as events:
                message = events.get_final_message()
        else:
            message = sdk.messages.create(**request)
        usage = message.usage
        assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (6, 0, 2745)
        assert usage.cache_creation_input_tokens == 159_217
        if stream:
            # the SDK takes a stream's usage from message_delta, whose usage has no cache_creation
            # (Anthropic sends the split in message_start; the gateway knows it only at the end)
            continue
        assert usage.cache_creation is not None
        assert (usage.cache_creation.ephemeral_5m_input_tokens, usage.cache_creation.ephemeral_1h_input_tokens) == (
            159_217,
            0,
        )
