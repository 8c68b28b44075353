"""The graceful shutdown's rules without a server (application/shutdown.py, the HTTP side in
adapters/http/drain.py): the drain waits for the requests in flight and refuses new ones,
the grace's end cuts the rest, a stream cut by it is recorded as a 503 ``shutting_down``
charged only the output delivered (not the 499 of a caller gone), the guard ends a cut answer
saying why, ``GET /ready`` fails from the drain's start, and the setting's rules."""

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import anyio
import orjson
import pytest
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from adapters.bootstrap import build_services, in_memory_ledger
from adapters.http.app import create_app
from adapters.http.chat import relay
from adapters.http.drain import DrainGuard
from adapters.settings import Settings, SettingsError
from application.calls import StartedCall
from application.ports import ChatExchange
from application.shutdown import Shutdown
from domain.estimation import estimated_usage
from tests.fakes.provider import StreamScript
from tests.unit.test_billed_call import World, world  # noqa: F401  (the fixture)
from tests.unit.test_metered_stream import GRANT, OUTPUT, TEXT, billing_of, chat_request, chunk, setup, start

# --- the drain ---------------------------------------------------------------------------


class Scope_:
    def __init__(self) -> None:
        self.cancelled = 0

    def cancel(self) -> None:
        self.cancelled += 1


def test_a_drain_refuses_new_requests_and_returns_once_the_ones_in_flight_leave() -> None:
    shutdown = Shutdown(grace_seconds=30)
    first, second, late = Scope_(), Scope_(), Scope_()
    assert shutdown.enter(first) and shutdown.enter(second)

    async def scenario() -> Any:
        drain = asyncio.ensure_future(shutdown.drain())
        await asyncio.sleep(0)  # the drain has begun and waits
        assert shutdown.draining and not shutdown.enter(late)
        shutdown.leave(first)
        await asyncio.sleep(0)
        assert not drain.done()
        shutdown.leave(second)
        return await drain

    report = asyncio.run(scenario())
    assert (report.in_flight, report.cut, report.unsettled) == (2, 0, 0)
    assert first.cancelled == second.cancelled == 0 and not shutdown.cutting
    assert shutdown.cancelled_as() == (499, "client_disconnected")


def test_with_no_grace_the_requests_in_flight_are_cut_at_once_and_a_cancelled_call_is_a_503_shutting_down() -> None:
    shutdown = Shutdown(grace_seconds=0)
    running = Scope_()
    shutdown.enter(running)

    async def scenario() -> Any:
        drain = asyncio.ensure_future(shutdown.drain())
        await asyncio.sleep(0)
        assert running.cancelled == 1 and shutdown.cutting
        assert shutdown.cancelled_as() == (503, "shutting_down")
        shutdown.leave(running)  # its call recorded its ending
        return await drain

    report = asyncio.run(scenario())
    assert (report.in_flight, report.cut, report.unsettled) == (1, 1, 0)


def test_stopping_without_a_drain_cuts_only_what_still_runs_and_keeps_taking_requests() -> None:
    shutdown = Shutdown()
    asyncio.run(shutdown.stopped())  # an app run in process ends: nothing ran
    assert not shutdown.draining and not shutdown.cutting and shutdown.enter(Scope_())


# --- a stream cut by the shutdown ----------------------------------------------------------


def test_a_stream_cut_at_the_deadline_is_a_503_shutting_down_charged_only_the_output_delivered(
    world: World,
) -> None:
    script = StreamScript(batches=OUTPUT, hang=True)
    calls, provider = setup(world, script)
    chat = chat_request()

    async def scenario() -> StartedCall[ChatExchange]:
        call = await start(calls, world.key, chat)
        pieces = relay(calls, call, chat)
        await pieces.__anext__()
        waiting = asyncio.ensure_future(pieces.__anext__())
        await script.started.wait()  # the relay waits for the provider's next batch
        calls.shutdown.cutting = True  # the deadline: set before the cancellation (Shutdown.cut)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return call

    call = asyncio.run(scenario())
    request_id = call.opened.request_id
    delivered = estimated_usage(input_chars=0, output_chars=len("".join(TEXT)))
    assert billing_of(calls).completed == [(request_id, 503, "shutting_down", delivered)]
    assert billing_of(calls).failed == []
    charge = world.record(request_id).details.charge
    assert charge > 0 and world.account() == (GRANT - charge, 0)
    assert provider.exchanges[0].aborted


def test_a_stream_cut_before_any_output_fails_uncharged_with_its_hold_released(world: World) -> None:
    script = StreamScript(batches=((chunk(),),), hang=True)  # a chunk with no output in it
    calls, provider = setup(world, script)
    chat = chat_request()

    async def scenario() -> StartedCall[ChatExchange]:
        call = await start(calls, world.key, chat)
        pieces = relay(calls, call, chat)
        await pieces.__anext__()
        waiting = asyncio.ensure_future(pieces.__anext__())
        await script.started.wait()
        calls.shutdown.cutting = True
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return call

    call = asyncio.run(scenario())
    assert billing_of(calls).completed == []
    assert [(f[0], f[1], f[2]) for f in billing_of(calls).failed] == [(call.opened.request_id, 503, "shutting_down")]
    assert world.account() == (GRANT, 0)


# --- the guard ------------------------------------------------------------------------------


async def _call(app: Any, path: str = "/v1/chat/completions") -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "http", "method": "POST", "path": path, "headers": []}, receive, send)
    return sent


def _stream_app(started: asyncio.Event) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: {}\n\n", "more_body": True})
        started.set()
        await anyio.sleep_forever()

    return app


@pytest.mark.parametrize(
    ("path", "last"),
    [
        ("/v1/chat/completions", b'data: {"error":{"message"'),
        ("/v1/messages", b'event: error\ndata: {"type":"error","error":{"type":"api_error"'),
        ("/v1/responses", b'event: error\ndata: {"type":"error","code":"shutting_down"'),
    ],
)
def test_the_guard_ends_a_cut_stream_with_an_error_event_and_refuses_requests_while_draining(
    path: str, last: bytes
) -> None:
    shutdown = Shutdown(grace_seconds=0)

    async def scenario() -> tuple[list[Message], list[Message]]:
        started = asyncio.Event()
        guard = DrainGuard(_stream_app(started), shutdown)
        request = asyncio.ensure_future(_call(guard, path))
        await started.wait()
        await shutdown.drain()
        return await request, await _call(guard)

    cut, refused = asyncio.run(scenario())
    assert cut[-1]["more_body"] is False and cut[-1]["body"].startswith(last)
    assert b"shutting_down" in cut[-1]["body"] or b"shut down" in cut[-1]["body"]
    assert refused[0]["status"] == 503 and (b"connection", b"close") in refused[0]["headers"]
    assert orjson.loads(refused[1]["body"])["error"]["code"] == "shutting_down"


def test_the_guard_answers_a_request_cut_before_its_answer_started_with_a_503() -> None:
    shutdown = Shutdown(grace_seconds=0)

    async def waiting(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep_forever()

    async def scenario() -> list[Message]:
        request = asyncio.ensure_future(_call(DrainGuard(waiting, shutdown)))
        await asyncio.sleep(0)
        await shutdown.drain()
        return await request

    sent = asyncio.run(scenario())
    assert sent[0]["status"] == 503
    assert orjson.loads(sent[1]["body"])["error"] == {
        "message": "the gateway is shutting down; send the request again",
        "type": "server_error",
        "param": None,
        "code": "shutting_down",
    }


# --- /ready, and the setting ----------------------------------------------------------------


@pytest.fixture
def services() -> Iterator[Any]:
    ledger = in_memory_ledger()
    ledger.initialise()
    yield build_services(replace(Settings()), ledger=ledger)
    ledger.close()


def test_ready_fails_its_shutdown_check_from_the_drains_start_while_health_stays_ok(services: Any) -> None:
    with TestClient(create_app(services)) as client:
        assert client.get("/ready").json()["checks"]["shutdown"] == {"ok": True}
        services.shutdown.begin()
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["shutdown"] == {
            "ok": False,
            "error": "shutting down: taking no new requests",
            "in_flight": 0,
            "cutting": False,
        }
        assert client.get("/health").status_code == 200
        refused = client.get("/v1/models", headers={"authorization": "Bearer x"})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"


@pytest.mark.parametrize(("raw", "seconds"), [(None, 30.0), ("", 30.0), ("0", 0.0), ("2.5", 2.5), ("3600", 3600.0)])
def test_the_grace_setting_defaults_to_30_seconds_and_takes_0(raw: str | None, seconds: float) -> None:
    env = {} if raw is None else {"TALLYHUB_SHUTDOWN_GRACE_SECONDS": raw}
    assert Settings.from_env(env).shutdown_grace_seconds == seconds


@pytest.mark.parametrize("raw", ["-1", "abc", "nan", "3601", "inf"])
def test_a_bad_grace_is_a_settings_error_naming_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError, match="TALLYHUB_SHUTDOWN_GRACE_SECONDS"):
        Settings.from_env({"TALLYHUB_SHUTDOWN_GRACE_SECONDS": raw})
