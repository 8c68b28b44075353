"""Graceful shutdown of the real ``tallyhub serve`` (one process and ``--workers 2``, SQLite
and server mode) and ``tallyhub worker`` on SIGTERM (application/shutdown.py):

- a stream in flight at SIGTERM finishes within ``TALLYHUB_SHUTDOWN_GRACE_SECONDS``, is
  charged exactly its receipt, and the process exits 0; a request sent after SIGTERM is not
  served (the port refuses connections);
- with a short grace, a stream that hangs past it is cut (its caller gets a last
  ``shutting_down`` error event) and charged only the output it delivered, and a plain
  request still waiting on the provider is answered 503 ``shutting_down``, nothing charged;
  both are recorded as 503 ``shutting_down``, no hold is left, ``tallyhub verify`` passes.

The fake upstream's stalls are what keep a request in flight; every wait polls a condition
and is bounded."""

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from domain.estimation import tokens_for_chars
from domain.money import format_credits
from tests.conftest import PgSchemas
from tests.e2e.conftest import MODEL, OUTPUT_RATE, configure
from tests.e2e.test_server_mode import Worker, server_env
from tests.fakes.openai_scripts import Scripted
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import REPO, TALLYHUB, Gateway, cli, free_port

GRANT = 100 * 10**9  # the account's credit, nanocredits
STREAM = {"model": MODEL, "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "hello"}]}
PLAIN = {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": "hello"}]}


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)


def refuses_connections(url: str) -> bool:
    """The port refuses a connection (one caught in the backlog while the listener closes is
    reset unanswered: not yet a refusal, asked again)."""
    try:
        httpx.get(f"{url}/health", timeout=2)
    except httpx.ConnectError:
        return True
    except httpx.TransportError:
        return False
    return False


@dataclass
class Serve:
    """``tallyhub serve`` started by the test (``--workers`` included), stopped by SIGTERM."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @classmethod
    def start(cls, gateway: Gateway, workers: int = 1) -> "Serve":
        port = free_port()
        log_path = Path(gateway.env["TALLYHUB_DATA_DIR"]) / f"serve-{port}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [*TALLYHUB, "serve", "--port", str(port), "--workers", str(workers)],
                env=gateway.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        served = cls(process, f"http://127.0.0.1:{port}", log_path)
        wait_until(lambda: served.answers() or served.process.poll() is not None, 60, "serve listens")
        assert process.poll() is None, served.log()
        return served

    def answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def exit_status(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"serve did not exit within {timeout} s of SIGTERM:\n{self.log()}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class StreamReader:
    """A streamed chat completion read frame by frame (its JSON payloads, ``[DONE]`` as a str)."""

    def __init__(self, url: str, key: str) -> None:
        self._client = httpx.Client(timeout=60)
        self._response = self._client.send(
            self._client.build_request(
                "POST", f"{url}/v1/chat/completions", json=STREAM, headers={"authorization": f"Bearer {key}"}
            ),
            stream=True,
        )
        assert self._response.status_code == 200, self._response.read()
        self.request_id = self._response.headers["x-request-id"]
        self._lines = self._response.iter_lines()
        self.frames: list[Any] = []

    def next_frame(self) -> Any | None:
        for line in self._lines:
            if line.startswith("data: "):
                payload = line.removeprefix("data: ")
                frame = payload if payload == "[DONE]" else json.loads(payload)
                self.frames.append(frame)
                return frame
        return None  # the body ended

    def read_until_content(self, chunks: int) -> None:
        while self.content_chunks() < chunks:
            assert self.next_frame() is not None, f"the stream ended early: {self.frames}"

    def read_to_end(self) -> list[Any]:
        while self.next_frame() is not None:
            pass
        self.close()
        return self.frames

    def content_chunks(self) -> int:
        return sum(1 for f in self.frames if isinstance(f, dict) and _content(f))

    def content_chars(self) -> int:
        return sum(len(_content(f)) for f in self.frames if isinstance(f, dict))

    def close(self) -> None:
        self._response.close()
        self._client.close()


def _content(frame: dict[str, Any]) -> str:
    return "".join((c.get("delta") or {}).get("content") or "" for c in frame.get("choices") or [])


def held_and_balance(gateway: Gateway) -> tuple[int, int]:
    balance = cli(gateway.env, "balance", "acme")
    return balance["held"], balance["balance"]


def request_record(gateway: Gateway, request_id: str) -> dict[str, Any]:
    return gateway.admin_json("GET", f"/requests/{request_id}")


def gateway_for(
    tmp_path: Path, upstream: FakeOpenAIUpstream, grace: str, database_url: str | None = None, **extra: str
) -> tuple[Gateway, str]:
    gateway = Gateway.initialised(tmp_path, database_url, TALLYHUB_SHUTDOWN_GRACE_SECONDS=grace, **extra)
    return gateway, configure(gateway, upstream, "acme", str(GRANT // 10**9))


@pytest.fixture
def fresh_upstream() -> Iterator[FakeOpenAIUpstream]:
    """An upstream of the test's own: its stalled answers never meet another test's requests."""
    from tests.e2e.conftest import UPSTREAM_KEY

    fake = FakeOpenAIUpstream(api_key=UPSTREAM_KEY).start()
    yield fake
    fake.stop()


# --- a stream in flight finishes -------------------------------------------------------------


def drain_one_stream(serve: Serve, key: str, upstream: FakeOpenAIUpstream) -> tuple[StreamReader, list[Any]]:
    """A stream stalled after two chunks gets SIGTERM; the port refuses connections at once
    (a new request is not served) while the stream is still stalled; the stream then finishes."""
    upstream.script(Scripted.stall_stream_after(2, 6.0))  # longer than the refusal takes to show
    stream = StreamReader(serve.url, key)
    stream.read_until_content(2)
    serve.terminate()
    wait_until(lambda: refuses_connections(serve.url), 10, "the port refuses new connections after SIGTERM")
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{serve.url}/v1/chat/completions", json=PLAIN, headers={"authorization": f"Bearer {key}"})
    assert serve.process.poll() is None, "serve exited with a stream in flight"
    return stream, stream.read_to_end()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stream_in_flight_at_sigterm_finishes_is_charged_its_receipt_and_serve_exits_0(
    tmp_path: Path, fresh_upstream: FakeOpenAIUpstream, workers: int
) -> None:
    gateway, key = gateway_for(tmp_path, fresh_upstream, "20")
    serve = Serve.start(gateway, workers)
    try:
        stream, frames = drain_one_stream(serve, key, fresh_upstream)
        assert serve.exit_status(30) == 0, serve.log()
    finally:
        serve.kill()
    assert frames[-1] == "[DONE]", frames
    usage = frames[-2]["usage"]
    charged = usage["cost_nanocredits"]
    assert charged > 0 and usage["cost_decimal"] == format_credits(charged)
    assert "drained: the 1 request(s) in flight finished" in serve.log()

    assert held_and_balance(gateway) == (0, GRANT - charged)
    assert cli(gateway.env, "verify")["ok"] is True
    gateway.start()
    try:
        record = request_record(gateway, stream.request_id)
    finally:
        gateway.stop()
    assert record["status"] == 200 and record["cost"] == charged, record


# --- what still runs at the deadline is cut --------------------------------------------------


@dataclass
class CutRequests:
    stream: StreamReader
    stream_frames: list[Any]
    plain: httpx.Response
    plain_request_id: str


def cut_two_requests(serve: Serve, key: str, upstream: FakeOpenAIUpstream) -> CutRequests:
    """A stream hanging after two chunks and a plain request waiting for the provider's
    headers, both past a 1 s grace."""
    upstream.script(Scripted.stall_stream_after(2, 20.0))
    stream = StreamReader(serve.url, key)
    stream.read_until_content(2)
    seen = len(upstream.requests)
    upstream.script(Scripted.delay(20.0))
    answer: list[httpx.Response] = []
    plain = threading.Thread(
        target=lambda: answer.append(
            httpx.post(
                f"{serve.url}/v1/chat/completions", json=PLAIN, headers={"authorization": f"Bearer {key}"}, timeout=60
            )
        )
    )
    plain.start()
    wait_until(lambda: len(upstream.requests) > seen, 10, "the plain request reached the provider")
    serve.terminate()
    frames = stream.read_to_end()
    plain.join(30)
    assert answer, "the plain request got no answer"
    return CutRequests(stream, frames, answer[0], answer[0].headers["x-request-id"])


def assert_cut_and_recorded(gateway: Gateway, cut: CutRequests) -> None:
    """The caller of each saw why; each is recorded as a 503 shutting_down; the stream is
    charged its delivered output only (⌈chars / 4⌉ tokens at the output rate), the plain
    request nothing; no hold is left and the books verify."""
    last = cut.stream_frames[-1]
    assert "[DONE]" not in cut.stream_frames and last["error"]["code"] == "shutting_down", cut.stream_frames
    assert cut.plain.status_code == 503 and cut.plain.json()["error"]["code"] == "shutting_down", cut.plain.text
    delivered = tokens_for_chars(cut.stream.content_chars()) * OUTPUT_RATE
    assert delivered > 0
    assert held_and_balance(gateway) == (0, GRANT - delivered)
    assert cli(gateway.env, "verify")["ok"] is True
    stream_record = request_record(gateway, cut.stream.request_id)
    plain_record = request_record(gateway, cut.plain_request_id)
    assert (stream_record["status"], stream_record["error_code"], stream_record["cost"]) == (
        503,
        "shutting_down",
        delivered,
    ), stream_record
    assert (plain_record["status"], plain_record["error_code"], plain_record["cost"]) == (
        503,
        "shutting_down",
        0,
    ), plain_record


def test_past_a_short_grace_a_hung_stream_and_a_waiting_request_are_cut_released_and_serve_exits_0(
    tmp_path: Path, fresh_upstream: FakeOpenAIUpstream
) -> None:
    gateway, key = gateway_for(tmp_path, fresh_upstream, "1")
    serve = Serve.start(gateway)
    try:
        cut = cut_two_requests(serve, key, fresh_upstream)
        assert serve.exit_status(30) == 0, serve.log()
    finally:
        serve.kill()
    assert "cutting 2 request(s) still running after 1 s" in serve.log()
    gateway.start()
    try:
        assert_cut_and_recorded(gateway, cut)
    finally:
        gateway.stop()


# --- server mode: PostgreSQL, Redis, serve and worker ----------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
def test_server_mode_serve_drains_and_cuts_and_the_worker_stops_on_sigterm(
    tmp_path: Path, fresh_upstream: FakeOpenAIUpstream, pg_schemas: PgSchemas
) -> None:
    gateway, key = gateway_for(tmp_path, fresh_upstream, "1", pg_schemas.new_url(), **server_env())
    worker = Worker.start(gateway.env, "--poll-seconds", "0.2")
    serve = Serve.start(gateway)
    try:
        cut = cut_two_requests(serve, key, fresh_upstream)
        assert serve.exit_status(30) == 0, serve.log()
        gateway.start()
        try:
            assert_cut_and_recorded(gateway, cut)
        finally:
            gateway.stop()
        report = worker.stop()  # SIGTERM: exit 0 with its report (asserted by Worker.stop)
        assert report["stopped"] is True and report["cut"] is False, report
    finally:
        serve.kill()
        worker.kill()


@pytest.mark.postgres
@pytest.mark.redis
def test_server_mode_a_stream_in_flight_finishes_and_is_charged_its_receipt(
    tmp_path: Path, fresh_upstream: FakeOpenAIUpstream, pg_schemas: PgSchemas
) -> None:
    gateway, key = gateway_for(tmp_path, fresh_upstream, "20", pg_schemas.new_url(), **server_env())
    serve = Serve.start(gateway, workers=2)
    try:
        stream, frames = drain_one_stream(serve, key, fresh_upstream)
        assert serve.exit_status(30) == 0, serve.log()
    finally:
        serve.kill()
    assert frames[-1] == "[DONE]", frames
    charged = frames[-2]["usage"]["cost_nanocredits"]
    assert held_and_balance(gateway) == (0, GRANT - charged)
    assert cli(gateway.env, "verify")["ok"] is True
