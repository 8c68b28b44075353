"""Client faults (issue 20, item 2), through the real server (embedded, SQLite): a caller that
goes away before the provider answers, mid-stream, or after the last chunk has its request
closed exactly once — one record in the request log, one charge or none in the ledger, the
hold settled or released (``held`` back to 0) — and a caller that reads very slowly holds
neither the event loop nor the gateway's memory: the transport's flow control reaches back
to the provider (its writes wait), proven by the bytes the provider manages to send and the
gateway's resident memory while the reader reads nothing.

Two findings were fixed: a caller gone before a plain answer was not noticed (the call ran on
and was recorded 200, charged what the provider produced; now the connection is watched until
the answer is read: a 499, the provider's call aborted, nothing charged), and a caller gone
while the provider's data kept arriving was not acted on until the provider ended or its
total timeout ran out (under uvloop the relay was never cancelled)."""

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from domain.estimation import tokens_for_chars
from tests.e2e.conftest import INPUT_RATE, MODEL, OUTPUT_RATE, UPSTREAM_KEY, configure
from tests.fakes.openai_scripts import Scripted
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import Gateway, cli

REPLY = "one two three four five six seven eight"
MIB = 1024 * 1024
# The gateway's own memory while a reader reads nothing: the transports' high-water marks and a
# chunk or two, far below this; without flow control it grows by the provider's whole output.
MEMORY_BOUND = 16 * MIB


def tcp_buffer_max(kind: str) -> int:
    """The largest buffer the kernel autotunes one TCP socket's ``kind`` ("rmem" or "wmem") to."""
    return int(Path(f"/proc/sys/net/ipv4/tcp_{kind}").read_text().split()[2])


# What may sit between a reader that reads nothing and a provider that never stops: the kernel's
# buffers — the provider's send buffer and the gateway's receive buffer on the upstream leg, the
# gateway's send buffer on the caller's leg (the caller pins its receive buffer small) — plus the
# gateway's own. The kernel autotunes these up to its sysctl maxima (here a receive buffer may grow
# to 32 MiB), so the bound is read off the machine rather than guessed: a fixed 16 MiB failed once
# in CI at 17.8 MB. Without flow control the provider's writes would not stop at all (``plateau``).
IN_FLIGHT_BOUND = 2 * tcp_buffer_max("wmem") + tcp_buffer_max("rmem") + MEMORY_BOUND
TOTAL_TIMEOUT = 4  # the provider's --timeout-total, seconds
MAX_TOKENS = 30
EMBEDDING_MODEL = "openai/text-embedding-3-small"


@dataclass
class Setup:
    gateway: Gateway
    upstream: FakeOpenAIUpstream
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}", "content-type": "application/json"}

    def balance(self) -> dict[str, Any]:
        return self.gateway.balance("acme")

    def log(self) -> list[dict[str, Any]]:
        return self.gateway.admin_json("GET", "/requests", params={"limit": 1000})["data"]

    def new_records(self, seen: set[str], count: int = 1) -> list[dict[str, Any]]:
        """The request log's records not in ``seen``, once there are ``count`` of them."""
        deadline = time.monotonic() + 15
        while True:
            rows = [row for row in self.log() if row["request_id"] not in seen]
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)

    def settled(self) -> dict[str, Any]:
        """The balance once no hold is open (a gone caller's request closes after it left)."""
        deadline = time.monotonic() + 15
        while (balance := self.balance())["held"] and time.monotonic() < deadline:
            time.sleep(0.05)
        return balance


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    upstream = FakeOpenAIUpstream(api_key=UPSTREAM_KEY, reply_text=REPLY).start()
    gateway = Gateway.initialised(tmp_path_factory.mktemp("client-faults"))
    key = configure(gateway, upstream, "acme", "100")
    cli(gateway.env, "prices", "set", EMBEDDING_MODEL, "--input", "0.02", "--output", "0")
    # every answer here takes under 2 s; an endless one ends at this bound (see the slow reader)
    cli(gateway.env, "providers", "update", "openai", "--timeout-total", str(TOTAL_TIMEOUT))
    gateway.start()
    served = Setup(gateway, upstream, key)
    yield served
    try:
        assert served.settled()["held"] == 0
        assert cli(gateway.env, "verify")["ok"] is True
    finally:
        gateway.stop()
        upstream.stop()


@pytest.fixture(autouse=True)
def fresh_upstream(setup: Setup) -> None:
    setup.upstream.reset()


def chat_body(stream: bool, **extra: Any) -> bytes:
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 30, "messages": [{"role": "user", "content": "go"}]}
    if stream:
        body["stream"] = True
    return orjson.dumps(body | extra)


def prompt_charge(body: bytes) -> int:
    return tokens_for_chars(len(body)) * INPUT_RATE


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def one_record(setup: Setup, seen: set[str]) -> dict[str, Any]:
    records = setup.new_records(seen)
    assert len(records) == 1, records
    return records[0]


def leave_before_the_answer(
    setup: Setup, stream: bool, path: str = "/v1/chat/completions", body: bytes | None = None
) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """A caller that gives up (closes its connection) while the provider has not answered yet:
    (balance before, its request's one record, its body)."""
    setup.upstream.script(Scripted.delay(1.5))
    seen = {row["request_id"] for row in setup.log()}
    before = setup.balance()
    body = chat_body(stream) if body is None else body
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            setup.gateway.url + path,
            content=body,
            headers=setup.headers,
            timeout=httpx.Timeout(30, read=0.3),
        )
    return before, one_record(setup, seen), body


def test_a_plain_request_whose_caller_stays_is_answered_however_slow_the_provider(setup: Setup) -> None:
    """The caller's connection is watched while the provider has not answered (a 499 if it
    leaves): one that waits is never cancelled, the slow answer is served and charged."""
    setup.upstream.script(Scripted.delay(1.5))
    seen = {row["request_id"] for row in setup.log()}
    before = setup.balance()
    body = chat_body(False)
    response = httpx.post(setup.gateway.url + "/v1/chat/completions", content=body, headers=setup.headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == REPLY
    record = one_record(setup, seen)
    assert record["status"] == 200 and record["charge"] == int(response.headers["x-tallyhub-charge-nanocredits"])
    assert record["output_tokens"] > 0 and record["charge"] > record["output_tokens"] * OUTPUT_RATE
    after = setup.settled()
    assert before["balance"] - after["balance"] == record["charge"] and after["held"] == 0


def test_a_stream_whose_caller_left_before_the_answer_ends_at_its_first_chunk_as_a_499_charged_the_prompt(
    setup: Setup,
) -> None:
    """The stream's answer starts once the provider's headers arrive; the caller is already gone,
    so the relay is cancelled at once: a 499 like any caller gone mid-stream, nothing relayed."""
    before, record, body = leave_before_the_answer(setup, stream=True)
    assert (record["status"], record["output_tokens"], record["charge"]) == (499, 0, prompt_charge(body))
    after = setup.settled()
    assert before["balance"] - after["balance"] == record["charge"] and after["held"] == 0


def test_a_plain_request_whose_caller_left_before_the_answer_is_cancelled_as_a_499_and_charged_nothing(
    setup: Setup,
) -> None:
    """The plain answer had not begun (a stream's had: its prompt is charged): released, the
    provider's call stopped."""
    before, record, _ = leave_before_the_answer(setup, stream=False)
    assert setup.upstream.wait_until(lambda: setup.upstream.requests[0].disconnected, timeout=10)
    after = setup.settled()
    assert (record["status"], record["charge"], after["balance"]) == (499, 0, before["balance"])


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/messages", {"model": MODEL, "max_tokens": 30, "messages": [{"role": "user", "content": "go"}]}),
        ("/v1/responses", {"model": MODEL, "input": "go"}),
        ("/v1/embeddings", {"model": EMBEDDING_MODEL, "input": "go"}),
    ],
)
def test_every_plain_answer_whose_caller_left_before_it_is_a_499_charged_nothing(
    setup: Setup, path: str, body: dict[str, Any]
) -> None:
    before, record, _ = leave_before_the_answer(setup, False, path, orjson.dumps(body))
    assert setup.upstream.wait_until(lambda: setup.upstream.requests[0].disconnected, timeout=10)
    after = setup.settled()
    assert (record["status"], record["charge"], after["balance"]) == (499, 0, before["balance"])
    assert "Exception in ASGI application" not in setup.gateway.logs()  # the cancellation ends in our hands


def test_a_caller_gone_mid_stream_cancels_the_provider_and_pays_once_for_what_was_produced(setup: Setup) -> None:
    setup.upstream.script(Scripted.chunk_delay(0.2))
    seen = {row["request_id"] for row in setup.log()}
    before = setup.balance()
    body = chat_body(True)
    with httpx.stream(
        "POST", setup.gateway.url + "/v1/chat/completions", content=body, headers=setup.headers, timeout=30
    ) as response:
        frames = 0
        for line in response.iter_lines():
            frames += line.startswith("data: ")
            if frames == 3:  # the role chunk and two words
                break
    assert setup.upstream.wait_until(lambda: setup.upstream.requests[0].disconnected, timeout=10)
    record = one_record(setup, seen)
    assert record["status"] == 499 and record["usage_source"] == "estimated"
    assert 2 <= record["output_tokens"] < len(REPLY.split())  # what was relayed before it noticed; never all
    assert record["charge"] == prompt_charge(body) + record["output_tokens"] * OUTPUT_RATE
    after = setup.settled()
    assert before["balance"] - after["balance"] == record["charge"] and after["held"] == 0


def test_a_caller_gone_after_the_last_chunk_but_before_the_usage_pays_once_for_the_whole_output(setup: Setup) -> None:
    words = len(REPLY.split())
    setup.upstream.script(Scripted.stall_stream_after(words, 1.5))  # every word, then silence before finish and usage
    seen = {row["request_id"] for row in setup.log()}
    before = setup.balance()
    body = chat_body(True)
    received = ""
    with httpx.stream(
        "POST", setup.gateway.url + "/v1/chat/completions", content=body, headers=setup.headers, timeout=30
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                received += "".join(c["delta"].get("content") or "" for c in orjson.loads(line[6:])["choices"])
            if received == REPLY:
                break
    record = one_record(setup, seen)
    assert (record["status"], record["output_tokens"]) == (499, tokens_for_chars(len(REPLY)))
    assert record["charge"] == prompt_charge(body) + tokens_for_chars(len(REPLY)) * OUTPUT_RATE
    after = setup.settled()
    assert before["balance"] - after["balance"] == record["charge"] and after["held"] == 0


def test_a_caller_gone_right_after_done_is_charged_once_what_its_receipt_said(setup: Setup) -> None:
    seen = {row["request_id"] for row in setup.log()}
    before = setup.balance()
    body = chat_body(True, stream_options={"include_usage": True})
    with httpx.stream(
        "POST", setup.gateway.url + "/v1/chat/completions", content=body, headers=setup.headers, timeout=30
    ) as response:
        usage = None
        for line in response.iter_lines():
            if line.startswith("data: {") and (chunk := orjson.loads(line[6:])).get("usage"):
                usage = chunk["usage"]
            if line == "data: [DONE]":
                break  # and the connection closes at once
    assert usage is not None
    record = one_record(setup, seen)
    assert (record["status"], record["charge"]) == (200, usage["cost_nanocredits"])
    after = setup.settled()
    assert before["balance"] - after["balance"] == usage["cost_nanocredits"] and after["held"] == 0


def raw_request(port: int, body: bytes, key: str) -> socket.socket:
    """A caller on a plain socket with a small receive buffer, its request sent, nothing read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {key}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def plateau(read: Any, settle: float = 0.5, timeout: float = 20) -> int:
    """``read()`` once two readings ``settle`` seconds apart agree (it stopped growing)."""
    deadline = time.monotonic() + timeout
    last = read()
    while time.monotonic() < deadline:
        time.sleep(settle)
        now = read()
        if now == last:
            return int(now)
        last = now
    raise AssertionError(f"still growing after {timeout} s: {last}")


def test_a_caller_that_reads_nothing_holds_neither_the_event_loop_nor_memory(setup: Setup) -> None:
    """The provider streams without end; the caller reads nothing. The provider's writes stop
    within what the sockets' buffers hold (the gateway reads no faster than its caller), the gateway's
    memory stays flat, another caller is served meanwhile; once the slow caller goes, the
    provider's call is aborted and the request closed once as a 499, charged no more than its
    prompt and ``max_tokens`` of output."""
    upstream, pid = setup.upstream, setup.gateway.processes[0].pid
    upstream.script(Scripted.endless_stream())
    seen = {row["request_id"] for row in setup.log()}
    before = setup.balance()
    rss_start = rss_bytes(pid)
    slow = raw_request(setup.gateway.port, chat_body(True), setup.key)
    try:
        sent = plateau(lambda: upstream.endless_bytes_sent)
        assert 0 < sent < IN_FLIGHT_BOUND
        assert rss_bytes(pid) - rss_start < MEMORY_BOUND
        served = httpx.post(
            setup.gateway.url + "/v1/chat/completions", content=chat_body(False), headers=setup.headers, timeout=30
        )
        assert served.status_code == 200  # the event loop is not held by the stalled stream
        seen.add(served.headers["x-request-id"])
        slow.recv(1)  # one byte: the stream moves on by at most what that frees
        assert plateau(lambda: upstream.endless_bytes_sent) < IN_FLIGHT_BOUND
        assert rss_bytes(pid) - rss_start < MEMORY_BOUND
    finally:
        slow.close()
    assert upstream.wait_until(lambda: upstream.requests[0].disconnected, timeout=TOTAL_TIMEOUT / 2)
    record = one_record(setup, seen)
    assert record["status"] == 499 and record["output_tokens"] <= MAX_TOKENS
    after = setup.settled()
    charged = before["balance"] - after["balance"] - int(served.headers["x-tallyhub-charge-nanocredits"])
    assert charged == record["charge"] <= chat_prompt_bound() + MAX_TOKENS * OUTPUT_RATE
    assert after["held"] == 0


def chat_prompt_bound() -> int:
    return prompt_charge(chat_body(True))


def test_a_caller_gone_from_a_fast_endless_stream_cancels_the_provider_call_at_once(setup: Setup) -> None:
    """The provider's data never stops arriving; the caller leaves after the first chunk. The
    relay is cancelled at once (it was not, under uvloop, before ``checkpoint_if_cancelled``
    in adapters/http/chat.py ``relay``): the provider's call is aborted, a 499."""
    upstream = setup.upstream
    upstream.script(Scripted.endless_stream())
    seen = {row["request_id"] for row in setup.log()}
    try:
        with httpx.stream(
            "POST",
            setup.gateway.url + "/v1/chat/completions",
            content=chat_body(True),
            headers=setup.headers,
            timeout=30,
        ) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    break
        # well before the provider's total timeout would end it
        assert upstream.wait_until(lambda: upstream.requests[0].disconnected, timeout=TOTAL_TIMEOUT / 2)
        assert one_record(setup, seen)["status"] == 499
    finally:
        setup.settled()  # however it ends, it has ended before the next test
        one_record(setup, seen)
