"""What counts as the provider's failure (issue 14): only a network error, a timeout or a
``MalformedUpstreamAnswer`` an adapter raised on purpose (``READ_FAILURES``). Anything else
raised while starting or reading a call — a ValueError, KeyError or TypeError from our own
code — is a bug of ours: never failed over, never counted against the credential, never
charged, and answered as a 500 ``internal_error``; while a garbled answer still gives the
502 it gave before. With the billed call and a fake provider, no server."""

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from adapters.http.chat import complete_plain, relay
from adapters.http.chat_request import parse_chat_request
from adapters.http.errors import response_for
from adapters.providers.anthropic_response import AnthropicStreamError
from adapters.providers.base import READ_FAILURES
from adapters.providers.bedrock import BedrockStreamError
from adapters.providers.gemini_response import StreamBroken
from adapters.providers.ollama import OllamaStreamError
from application.accounts import Accounts
from application.calls import BilledCalls, StartedCall
from application.failover import FailedAttempts
from application.ports import ChatExchange
from domain import spend_caps
from domain.errors import MalformedUpstreamAnswer, SpendCapReached, TallyhubError, UpstreamError
from domain.money import InvalidAmount
from tests.fakes.provider import FakeProvider, StreamScript
from tests.unit.test_billed_call import KEY_A, KEY_B, World, refused, started, world  # noqa: F401  (the fixture)
from tests.unit.test_metered_stream import OUTPUT, billing_of, chat_request, chunk, collect, start

GRANT = 10**15


def test_read_failures_are_network_errors_timeouts_and_malformed_answers_only() -> None:
    assert set(READ_FAILURES) == {aiohttp.ClientError, TimeoutError, MalformedUpstreamAnswer}
    for bug in (ValueError("ours"), KeyError("choices"), TypeError("ours"), AttributeError("ours")):
        assert not isinstance(bug, READ_FAILURES)
    assert not isinstance(InvalidAmount("not an amount"), READ_FAILURES)  # a domain error is no provider failure
    for broken in (
        StreamBroken("cut"),
        AnthropicStreamError("overloaded_error", "Overloaded"),
        BedrockStreamError("throttlingException", "slow down"),
        OllamaStreamError("no done"),
    ):
        assert isinstance(broken, MalformedUpstreamAnswer) and not isinstance(broken, ValueError)


def test_the_errors_that_crossed_layers_are_in_the_one_tree() -> None:
    assert spend_caps.SpendCapReached is SpendCapReached and issubclass(SpendCapReached, TallyhubError)
    assert issubclass(FailedAttempts, TallyhubError) and issubclass(MalformedUpstreamAnswer, TallyhubError)
    response = response_for(MalformedUpstreamAnswer("garbled"))
    assert response.status_code == 502
    assert orjson.loads(bytes(response.body))["error"] == {
        "message": "garbled",
        "type": "upstream_error",
        "param": None,
        "code": "upstream_bad_response",
    }


# -- starting a call (before the first byte) ------------------------------------------------


def _spy_health(world: World, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    failures: list[str] = []
    successes: list[str] = []
    monkeypatch.setattr(world.router.health, "record_failure", failures.append)
    monkeypatch.setattr(world.router.health, "record_success", successes.append)
    return failures, successes


def test_a_garbled_answer_before_the_first_byte_is_a_502_that_fails_over_and_counts_against_the_credential(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    Accounts(world.ledger).grant_credits("acme", GRANT)
    failures, successes = _spy_health(world, monkeypatch)
    provider = FakeProvider(MalformedUpstreamAnswer("the provider sent something that is not JSON"))
    call = started(world.calls(provider), world.key)
    garbled, served = provider.routes
    assert {garbled.secret, served.secret} == {KEY_A, KEY_B}
    assert [(a.status, a.error_code) for a in call.attempts] == [(502, "upstream_bad_response")]
    assert failures == [garbled.credential_id] and successes == [served.credential_id]


@pytest.mark.parametrize("bug", [ValueError("ours"), KeyError("choices"), TypeError("ours")], ids=type)
def test_a_bug_of_ours_before_the_first_byte_is_a_500_never_failed_over_nor_learned(
    world: World, monkeypatch: pytest.MonkeyPatch, bug: Exception
) -> None:
    Accounts(world.ledger).grant_credits("acme", GRANT)
    failures, successes = _spy_health(world, monkeypatch)
    provider = FakeProvider(bug)
    calls = world.calls(provider)
    error, request_id = refused(calls, world.key)
    assert error is bug and len(provider.routes) == 1
    assert billing_of(calls).failed == [(request_id, 500, "internal_error")]
    assert failures == [] and successes == []
    assert world.account() == (GRANT, 0)


# -- reading a whole answer ----------------------------------------------------------------


def _read_whole(world: World, completion: bytes | Exception) -> tuple[BilledCalls, StartedCall[ChatExchange], Any]:
    Accounts(world.ledger).grant_credits("acme", GRANT)
    calls = world.calls(FakeProvider(completion=completion))
    chat = parse_chat_request(orjson.dumps({"model": "smart", "messages": [{"role": "user", "content": "hi"}]}))

    async def scenario() -> tuple[StartedCall[ChatExchange], Any]:
        call = await start(calls, world.key, chat)
        try:
            await complete_plain(calls, call)
        except Exception as error:
            return call, error
        return call, None

    call, error = asyncio.run(scenario())
    return calls, call, error


@pytest.mark.parametrize(
    "completion",
    [b"<html>not json</html>", b"[1, 2]", MalformedUpstreamAnswer("garbled"), aiohttp.ClientPayloadError("cut")],
    ids=["not-json", "not-an-object", "malformed", "cut-off"],
)
def test_a_whole_answer_the_provider_garbled_is_still_a_502_released(world: World, completion: Any) -> None:
    calls, call, error = _read_whole(world, completion)
    assert isinstance(error, UpstreamError) and (error.status, error.code) == (502, "upstream_bad_response")
    assert billing_of(calls).failed == [(call.opened.request_id, 502, "upstream_bad_response")]
    assert billing_of(calls).completed == [] and world.account() == (GRANT, 0)


def test_a_plain_value_error_reading_a_whole_answer_is_a_bug_a_500_released(world: World) -> None:
    bug = ValueError("a translator of ours")
    calls, call, error = _read_whole(world, bug)
    assert error is bug
    assert billing_of(calls).failed == [(call.opened.request_id, 500, "internal_error")]
    assert billing_of(calls).completed == [] and world.account() == (GRANT, 0)


# -- reading a stream ------------------------------------------------------------------------


def _relay(world: World, script: StreamScript) -> tuple[BilledCalls, StartedCall[ChatExchange], Any, list[Any]]:
    Accounts(world.ledger).grant_credits("acme", GRANT)
    calls = world.calls(FakeProvider(stream=script))
    chat = chat_request()
    frames: list[Any] = []

    async def scenario() -> tuple[StartedCall[ChatExchange], Any]:
        call = await start(calls, world.key, chat)
        try:
            frames.extend(await collect(relay(calls, call, chat)))
        except Exception as error:
            return call, error
        return call, None

    call, error = asyncio.run(scenario())
    return calls, call, error, frames


@pytest.mark.parametrize(
    "ending",
    [MalformedUpstreamAnswer("garbled"), StreamBroken("no finishReason"), aiohttp.ClientPayloadError("cut")],
    ids=["malformed", "stream-broken", "cut-off"],
)
def test_a_stream_the_provider_broke_before_any_output_is_still_a_502_uncharged(world: World, ending: Any) -> None:
    calls, call, error, frames = _relay(world, StreamScript(ending=ending))
    assert error is None and frames[-1]["error"]["code"] == "upstream_stream_broken"
    assert billing_of(calls).failed == [(call.opened.request_id, 502, "upstream_stream_broken")]
    assert world.account() == (GRANT, 0)


def test_a_stream_chunk_that_is_not_json_is_the_providers_break_not_a_bug(world: World) -> None:
    calls, call, error, frames = _relay(world, StreamScript(batches=((b"{not json",),)))
    assert error is None and frames[-1]["error"]["code"] == "upstream_stream_broken"
    assert billing_of(calls).failed == [(call.opened.request_id, 502, "upstream_stream_broken")]


def test_a_plain_value_error_mid_stream_is_a_bug_a_500_uncharged_not_a_broken_stream(world: World) -> None:
    bug = ValueError("a translator of ours")
    calls, call, error, _ = _relay(world, StreamScript(batches=OUTPUT, ending=bug))
    assert error is bug
    assert billing_of(calls).failed == [(call.opened.request_id, 500, "internal_error")]
    assert billing_of(calls).completed == [] and world.account() == (GRANT, 0)


def test_output_before_a_garbled_stream_event_is_charged_as_a_broken_stream(world: World) -> None:
    calls, call, error, _ = _relay(world, StreamScript(batches=((chunk("Hello"),),), ending=StreamBroken("cut")))
    assert error is None
    ((request_id, status, code, _),) = billing_of(calls).completed
    assert (request_id, status, code) == (call.opened.request_id, 502, "upstream_stream_broken")


def test_a_stream_chunk_whose_usage_is_not_an_object_is_the_providers_break_not_a_bug(world: World) -> None:
    calls, call, error, frames = _relay(world, StreamScript(batches=((chunk("Hi", usage=5),),)))
    assert error is None and frames[-1]["error"]["code"] == "upstream_stream_broken"
    assert billing_of(calls).failed == [(call.opened.request_id, 502, "upstream_stream_broken")]
