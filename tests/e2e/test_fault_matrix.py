"""The upstream fault matrix (issue 20, item 1): every fault a provider can commit, from a
controllable fake, × a plain or a streamed request × a second target to fail over to or none,
each row judged by the same rules through the real server (embedded, SQLite):

- the client hears an honest answer in OpenAI's error shape: the status and code of the fault
  when it happened before the provider's first byte (and no target was left), else — the
  stream's status already sent — an ``upstream_stream_broken`` error event;
- the request fails over to the alias's fallback exactly when the fault came before the
  provider's first byte; a plain answer that breaks off or is garbled after its headers is not
  (found by this matrix: reported, not changed);
- the charge is what was produced: nothing for nothing delivered, the output delivered (never
  more than the request's ``max_tokens``) for a stream broken after some, the fallback's own
  usage at its own price when it served; the hold is released or settled (``held`` back to 0),
  and the ledger and the request log agree. ``tallyhub verify`` passes at the end.

Each row has a provider of its own (same fake server, its own credential health), so one
row's failures never cool the credential another row needs. The bound on a provider's answer
(adapters/providers/base.py ``MAX_ANSWER_BYTES``, ``MAX_EVENT_BYTES``) is proven by the
oversize rows: a 1 GiB plain answer is refused (by its Content-Length; unannounced sizes are
cut at the bound, tests/unit/providers/test_answer_bounds.py) with the gateway's memory
measured, and an endless stream ends at the provider's total timeout. Server mode (two
``serve`` and a ``worker`` on PostgreSQL and Redis) runs a representative subset."""

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from domain.estimation import tokens_for_chars
from tests.conftest import PgSchemas
from tests.e2e.test_server_mode import Worker, server_env
from tests.fakes.openai_scripts import Scripted
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import Gateway, cli, free_port

FAULT_KEY = "sk-fault-matrix-000000aaaa"
BACKUP_KEY = "sk-fault-backup-000000bbbb"
REPLY = "one two three four five six seven eight"
MAX_TOKENS = 30
INPUT_RATE, OUTPUT_RATE = 2_000, 8_000  # nanocredits per token at the faulty providers (2 and 8 credits per 1M)
BACKUP_INPUT_RATE, BACKUP_OUTPUT_RATE = 1_000, 3_000  # the fallback's own prices
GIB = 1024 * 1024 * 1024
RSS_GROWTH_LIMIT = 256 * 1024 * 1024  # a 1 GiB answer must not be held in memory


@dataclass(frozen=True)
class Outcome:
    """What the client must see for one mode of a fault: ``status`` and ``code`` of the error
    answer (a stream broken after its headers: 200 and the error event's code); ``failover``:
    the fallback serves it when there is one; ``charged``: "nothing", or "delivered" (the output
    the client received, at most ``MAX_TOKENS``)."""

    status: int
    code: str
    failover: bool = True
    charged: str = "nothing"
    retry_after: str | None = None


@dataclass(frozen=True)
class Fault:
    name: str
    plain: Callable[[], Scripted] | None
    stream: Callable[[], Scripted] | None
    expect_plain: Outcome | None
    expect_stream: Outcome | None
    policy: dict[str, float] = field(default_factory=dict)  # the provider's timeouts
    refused: bool = False  # the provider's address refuses connections: no script


def both(script: Callable[[], Scripted]) -> dict[str, Any]:
    return {"plain": script, "stream": script}


def raw_sse(*payloads: str) -> str:
    return "".join(f"data: {payload}\n\n" for payload in payloads)


CHUNK = orjson.dumps(
    {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {}}]}
).decode()
BEFORE_HEADERS = {"failover": True, "charged": "nothing"}
BROKEN_AFTER_OUTPUT = Outcome(200, "upstream_stream_broken", failover=False, charged="delivered")
BROKEN_EMPTY = Outcome(200, "upstream_stream_broken", failover=False)
BAD_PLAIN = Outcome(502, "upstream_bad_response", failover=False)

FAULTS = [
    Fault(
        "connection-refused",
        None,
        None,
        Outcome(502, "upstream_unavailable"),
        Outcome(502, "upstream_unavailable"),
        refused=True,
    ),
    Fault(
        "closed-before-headers",
        **both(Scripted.drop),
        expect_plain=Outcome(502, "upstream_unavailable"),
        expect_stream=Outcome(502, "upstream_unavailable"),
    ),
    Fault(
        "reset-before-headers",
        **both(lambda: Scripted.drop(reset=True)),
        expect_plain=Outcome(502, "upstream_unavailable"),
        expect_stream=Outcome(502, "upstream_unavailable"),
    ),
    Fault(
        "timeout-before-headers",
        **both(lambda: Scripted.delay(3)),
        expect_plain=Outcome(504, "upstream_timeout"),
        expect_stream=Outcome(504, "upstream_timeout"),
        policy={"timeout_first_byte": 0.5},
    ),
    Fault(
        "429-with-retry-after",
        **both(lambda: Scripted.error(429, "slow down", retry_after=7)),
        expect_plain=Outcome(429, "upstream_rate_limited", retry_after="7"),
        expect_stream=Outcome(429, "upstream_rate_limited", retry_after="7"),
    ),
    Fault(
        "429-without-retry-after",
        **both(lambda: Scripted.error(429, "slow down")),
        expect_plain=Outcome(429, "upstream_rate_limited", retry_after="1"),
        expect_stream=Outcome(429, "upstream_rate_limited", retry_after="1"),
    ),
    Fault(
        "500",
        **both(lambda: Scripted.error(500, "boom")),
        expect_plain=Outcome(502, "upstream_error"),
        expect_stream=Outcome(502, "upstream_error"),
    ),
    Fault(
        "502",
        **both(lambda: Scripted.raw(502, "<html>bad gateway</html>")),
        expect_plain=Outcome(502, "upstream_error"),
        expect_stream=Outcome(502, "upstream_error"),
    ),
    Fault(
        "503",
        **both(lambda: Scripted.error(503, "overloaded")),
        expect_plain=Outcome(503, "upstream_unavailable"),
        expect_stream=Outcome(503, "upstream_unavailable"),
    ),
    Fault(
        "malformed-json",
        plain=lambda: Scripted.raw(200, '{"id": "x", "choices": [', "application/json"),
        stream=lambda: Scripted.raw(200, raw_sse('{"id": "x", "choices": [', "[DONE]"), "text/event-stream"),
        expect_plain=BAD_PLAIN,
        expect_stream=BROKEN_EMPTY,
    ),
    Fault(
        "malformed-sse",
        # plain: the provider streamed to a plain request; stream: JSON lines without SSE framing
        plain=lambda: Scripted.raw(200, raw_sse(CHUNK, "[DONE]"), "text/event-stream"),
        stream=lambda: Scripted.raw(200, f"{CHUNK}\n{CHUNK}\n", "text/event-stream"),
        expect_plain=BAD_PLAIN,
        expect_stream=BROKEN_EMPTY,
    ),
    Fault(
        "closed-mid-body",
        plain=lambda: Scripted.cut_body(40),
        stream=lambda: Scripted.break_stream_after(2),
        expect_plain=BAD_PLAIN,
        expect_stream=BROKEN_AFTER_OUTPUT,
    ),
    Fault(
        "reset-mid-body",
        plain=lambda: Scripted.cut_body(40, reset=True),
        stream=lambda: Scripted(break_after=2, reset=True),
        expect_plain=BAD_PLAIN,
        expect_stream=BROKEN_AFTER_OUTPUT,
    ),
    Fault(
        "stream-ends-without-done",
        plain=None,
        stream=Scripted.without_done,
        expect_plain=None,
        expect_stream=BROKEN_AFTER_OUTPUT,
    ),
    Fault(
        "hang-mid-body",
        plain=lambda: Scripted.hang_body(40, 4),
        stream=lambda: Scripted.stall_stream_after(2, 4),
        expect_plain=Outcome(504, "upstream_timeout", failover=False),
        expect_stream=BROKEN_AFTER_OUTPUT,
        policy={"timeout_total": 1.5},
    ),
    Fault(
        "oversize",
        plain=lambda: Scripted.oversize(GIB),
        stream=Scripted.endless_stream,
        expect_plain=BAD_PLAIN,
        expect_stream=BROKEN_AFTER_OUTPUT,
        policy={"timeout_total": 1.5},
    ),
]

ROWS = [
    pytest.param(fault, mode, fallback, id=f"{fault.name}-{mode}-{'fallback' if fallback else 'alone'}")
    for fault in FAULTS
    for mode in ("plain", "stream")
    if getattr(fault, f"expect_{mode}") is not None
    for fallback in (False, True)
]


# server mode: a representative subset (before the headers, failed over or not; after them;
# a stream broken after output; a timeout; the bound on a whole answer)
SERVER_SUBSET = {
    "reset-before-headers-plain-fallback",
    "503-stream-alone",
    "429-with-retry-after-plain-alone",
    "timeout-before-headers-stream-fallback",
    "malformed-json-plain-alone",
    "closed-mid-body-stream-alone",
    "hang-mid-body-plain-alone",
    "oversize-plain-alone",
}
SERVER_ROWS = [row for row in ROWS if row.id in SERVER_SUBSET]


def provider_of(fault: Fault, mode: str, fallback: bool) -> str:
    return f"f{FAULTS.index(fault)}{mode[0]}{'b' if fallback else 'a'}"


@dataclass
class Matrix:
    gateway: Gateway
    fault: FakeOpenAIUpstream
    backup: FakeOpenAIUpstream
    key: str

    def balance(self) -> dict[str, Any]:
        return self.gateway.balance("acme")

    def record(self, request_id: str) -> dict[str, Any]:
        return self.gateway.admin_json("GET", f"/requests/{request_id}")

    def logged(self, request_id: str) -> list[dict[str, Any]]:
        """The request log's rows for ``request_id``, once the read model has it."""
        deadline = time.monotonic() + 10
        while True:
            rows = self.gateway.admin_json("GET", "/requests", params={"limit": 1000})["data"]
            found = [row for row in rows if row["request_id"] == request_id]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


def configured(gateway: Gateway, fault: FakeOpenAIUpstream, backup: FakeOpenAIUpstream, rows: list[Any]) -> str:
    """Account ``acme`` (1,000 credits) and its key (returned); through the admin API, a
    provider of its own per row (an alias to the fallback for the rows that have one) and one
    price-book version pricing them all."""
    cli(gateway.env, "accounts", "create", "acme")
    cli(gateway.env, "credits", "grant", "acme", "1000", "--reason", "fault matrix")
    key: str = cli(gateway.env, "keys", "issue", "acme", "--name", "matrix")["key"]
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    add = {"kind": "openai-compatible", "api_key": BACKUP_KEY, "base_url": backup.base_url}
    gateway.admin_json("POST", "/providers", json={"name": "backup", **add})
    prices = {"backup/gpt-4o-mini": {"input": "1", "output": "3"}}
    for row in rows:
        spec, mode, fallback = row.values
        name = provider_of(spec, mode, fallback)
        base_url = dead if spec.refused else fault.base_url
        provider = {"name": name, "kind": "openai-compatible", "base_url": base_url, "api_key": FAULT_KEY}
        gateway.admin_json("POST", "/providers", json={**provider, **spec.policy})
        prices[f"{name}/gpt-4o-mini"] = {"input": "2", "output": "8"}
        if fallback:
            gateway.admin_json(
                "PUT", f"/aliases/{name}", json={"models": [f"{name}/gpt-4o-mini", "backup/gpt-4o-mini"]}
            )
    gateway.admin_json("POST", "/prices/versions", content=orjson.dumps({"models": prices}))
    return key


def settled_and_verified(gateway: Gateway) -> None:
    assert gateway.balance("acme")["held"] == 0
    assert cli(gateway.env, "verify")["ok"] is True


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    """Embedded mode: one ``serve`` on SQLite."""
    fault = FakeOpenAIUpstream(api_key=FAULT_KEY, reply_text=REPLY).start()
    backup = FakeOpenAIUpstream(api_key=BACKUP_KEY).start()
    gateway = Gateway.initialised(tmp_path_factory.mktemp("fault-matrix"))
    try:
        gateway.start()
        key = configured(gateway, fault, backup, ROWS)
        yield Matrix(gateway, fault, backup, key)
        settled_and_verified(gateway)
    finally:
        gateway.stop()
        fault.stop()
        backup.stop()


@pytest.fixture(scope="module")
def server_matrix(tmp_path_factory: pytest.TempPathFactory, pg_schemas: PgSchemas) -> Iterator[Matrix]:
    """Server mode: two ``serve`` processes and a ``worker`` on PostgreSQL and Redis."""
    fault = FakeOpenAIUpstream(api_key=FAULT_KEY, reply_text=REPLY).start()
    backup = FakeOpenAIUpstream(api_key=BACKUP_KEY).start()
    gateway = Gateway.initialised(tmp_path_factory.mktemp("fault-matrix-server"), pg_schemas.new_url(), **server_env())
    worker: Worker | None = None
    try:
        gateway.start().start()
        worker = Worker.start(gateway.env)
        key = configured(gateway, fault, backup, SERVER_ROWS)
        yield Matrix(gateway, fault, backup, key)
        settled_and_verified(gateway)
    finally:
        if worker is not None:
            worker.stop()
        gateway.stop()
        fault.stop()
        backup.stop()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@dataclass
class Answer:
    status: int
    request_id: str
    error: dict[str, Any] | None
    delivered: str = ""
    usage: dict[str, Any] | None = None
    retry_after: str | None = None


def ask(matrix: Matrix, model: str, stream: bool) -> Answer:
    body: dict[str, Any] = {"model": model, "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": "go"}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    headers = {"authorization": f"Bearer {matrix.key}"}
    url = matrix.gateway.url + "/v1/chat/completions"
    with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as response:
        request_id = response.headers["x-request-id"]
        retry_after = response.headers.get("retry-after")
        if response.status_code != 200 or not stream:
            document = orjson.loads(response.read())
            if response.status_code != 200:
                return Answer(response.status_code, request_id, document["error"], retry_after=retry_after)
            text = document["choices"][0]["message"]["content"]
            charge = int(response.headers["x-tallyhub-charge-nanocredits"])  # a plain answer's receipt
            return Answer(200, request_id, None, text, {**document["usage"], "cost_nanocredits": charge})
        frames = [orjson.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    delivered = "".join(c["delta"].get("content") or "" for f in frames for c in f.get("choices", ()))
    error = frames[-1].get("error") if frames else None
    usage = frames[-1].get("usage") if frames and not error else None
    return Answer(200, request_id, error, delivered, usage)


@pytest.mark.parametrize(("spec", "mode", "fallback"), ROWS)
def test_an_upstream_fault_is_answered_honestly_failed_over_where_allowed_and_charged_what_was_produced(
    matrix: Matrix, spec: Fault, mode: str, fallback: bool
) -> None:
    judge(matrix, spec, mode, fallback)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize(("spec", "mode", "fallback"), SERVER_ROWS)
def test_in_server_mode_an_upstream_fault_is_answered_failed_over_and_charged_the_same(
    server_matrix: Matrix, spec: Fault, mode: str, fallback: bool
) -> None:
    judge(server_matrix, spec, mode, fallback)


def judge(matrix: Matrix, spec: Fault, mode: str, fallback: bool) -> None:
    """One row: the fault scripted, the request sent, every rule of the module docstring checked."""
    expected: Outcome = getattr(spec, f"expect_{mode}")
    script = getattr(spec, mode)
    name = provider_of(spec, mode, fallback)
    model = name if fallback else f"{name}/gpt-4o-mini"
    matrix.fault.reset()
    matrix.backup.reset()
    if script is not None:
        matrix.fault.script(script())
    before = matrix.balance()
    pid = matrix.gateway.processes[0].pid
    rss_before = rss_bytes(pid)

    answer = ask(matrix, model, mode == "stream")

    assert rss_bytes(pid) - rss_before < RSS_GROWTH_LIMIT
    failed_over = fallback and expected.failover
    record = matrix.record(answer.request_id)
    if failed_over:
        assert (answer.status, answer.error) == (200, None)
        assert len(matrix.backup.requests) == 1 and record["model"] == "backup/gpt-4o-mini"
        usage = answer.usage
        assert usage is not None
        charge = usage["prompt_tokens"] * BACKUP_INPUT_RATE + usage["completion_tokens"] * BACKUP_OUTPUT_RATE
        assert usage["cost_nanocredits"] == charge
        assert [(a["status"], a["error_code"]) for a in record["attempts"]] == [(expected.status, expected.code)]
        assert (record["status"], record["charge"]) == (200, charge)
    else:
        assert answer.status == expected.status
        assert answer.error is not None
        assert set(answer.error) == {"message", "type", "param", "code"} and answer.error["code"] == expected.code
        assert answer.retry_after == expected.retry_after
        assert not matrix.backup.requests  # nothing failed over
        if expected.charged == "delivered":
            assert answer.delivered, "the fault was to come after some output"
            assert REPLY.startswith(answer.delivered) or set(answer.delivered.split()) == {"word"}
            charge = min(tokens_for_chars(len(answer.delivered)), MAX_TOKENS) * OUTPUT_RATE
        else:
            assert answer.delivered == ""
            charge = 0
        status = expected.status if expected.status != 200 else 502
        assert (record["status"], record["error_code"], record["charge"]) == (status, expected.code, charge)
    after = matrix.balance()
    assert before["balance"] - after["balance"] == charge
    assert after["held"] == 0
    logged = matrix.logged(answer.request_id)
    assert len(logged) == 1 and logged[0]["charge"] == charge
    if not spec.refused:
        assert matrix.fault.requests, "the fault was served by the fake"
