"""``tallyhub serve --workers 2`` never overdraws an account: funded for exactly K
worst-case requests, it receives 4K at once (half plain, half streams) spread over both
worker processes, on SQLite (embedded mode: each worker runs the projections too) and in
server mode (PostgreSQL + Redis, a ``tallyhub worker``).

Exactly K are answered 200 and charged their receipts (the header of a plain answer, the
last usage chunk of a stream); the rest are 402 ``insufficient_credits`` in the OpenAI error
shape; the statement's running balance never goes below zero and ends at exactly zero with
nothing held; ``tallyhub verify`` passes. Nothing in the gateway tells the workers apart for
the test: the burst goes half over connections each worker accepted (found through /proc,
tests/support/serve_workers.py), and each worker's count of recorded requests is read from
its own prometheus-client file (one per worker pid): exactly half of the burst each."""

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from adapters.metrics_dir import multiproc_dir
from domain.money import format_credits
from tests.conftest import PgSchemas
from tests.e2e.conftest import INPUT_RATE, MODEL, OUTPUT_RATE, UPSTREAM_KEY, configure
from tests.e2e.test_graceful_shutdown import Serve, wait_until
from tests.e2e.test_server_mode import Store, Worker, server_env
from tests.fakes.openai_scripts import Scripted
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import Gateway, cli
from tests.support.serve_workers import accepted_by, worker_pids

FUNDED = 12  # K: the account's credit covers exactly this many worst-case holds
REQUESTS = 4 * FUNDED  # sent at once, every other one a stream
MAX_TOKENS = 50
STREAM_BODY = orjson.dumps(
    {
        "model": MODEL,
        "max_tokens": MAX_TOKENS,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "count to ten"}],
    }
)


def plain_body(length: int) -> bytes:
    """A plain request of exactly ``length`` bytes: the prompt padded, so that its hold (bounded
    by the body's bytes) is the stream's."""
    body = {"model": MODEL, "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": "count to ten"}]}
    padding = length - len(orjson.dumps(body))
    body["messages"][0]["content"] += "!" * padding  # type: ignore[index]
    return orjson.dumps(body)


PLAIN_BODY = plain_body(len(STREAM_BODY))
# As in test_no_overdraft.py: the hold bounds the prompt by the body's bytes at the dearest
# input class (2 x input); an answer reporting twice the bytes as prompt tokens costs exactly it.
WORST_PROMPT = 2 * len(STREAM_BODY)
WORST_CASE = WORST_PROMPT * INPUT_RATE + MAX_TOKENS * OUTPUT_RATE


@pytest.fixture
def upstream() -> Iterator[FakeOpenAIUpstream]:
    fake = FakeOpenAIUpstream(api_key=UPSTREAM_KEY).start()
    # Every answer costs exactly the worst case (so no success makes room for another) and takes
    # 50 ms (so the requests overlap in both workers).
    answer = Scripted.usage(prompt_tokens=WORST_PROMPT, completion_tokens=MAX_TOKENS) | Scripted.delay(0.05)
    fake.script(*[answer] * REQUESTS)
    yield fake
    fake.stop()


async def call(client: httpx.AsyncClient, url: str, key: str, stream: bool) -> tuple[int, Any, int | None]:
    """(status, the error object or None, the charge in nanocredits the answer's receipt states)."""
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    body = STREAM_BODY if stream else PLAIN_BODY
    async with client.stream("POST", f"{url}/v1/chat/completions", content=body, headers=headers) as response:
        text = (await response.aread()).decode()
    if response.status_code != 200:
        return response.status_code, orjson.loads(text), None
    if not stream:
        return 200, None, int(response.headers["x-tallyhub-charge-nanocredits"])
    frames = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]", text[-500:]
    usage = orjson.loads(frames[-2])["usage"]
    return 200, None, int(usage["cost_nanocredits"])


def client_port(response: httpx.Response) -> int:
    port: int = response.extensions["network_stream"].get_extra_info("client_addr")[1]
    return port


async def connections_on_each(url: str, pids: set[int], each: int) -> dict[int, list[httpx.AsyncClient]]:
    """``each`` open keep-alive connections accepted by every worker, one client per connection:
    a burst of new connections often lands on one worker (tests/support/serve_workers.py), so
    the burst goes over connections whose worker is known beforehand. A connection idle for 2 s
    is used again (uvicorn closes one idle for 5 s), and dropped if it was replaced."""
    port = int(url.rsplit(":", 1)[1])
    pinned: dict[int, dict[httpx.AsyncClient, tuple[int, float]]] = {pid: {} for pid in pids}
    deadline = time.monotonic() + 60  # each new connection is a coin toss between the workers
    while time.monotonic() < deadline:
        for clients in pinned.values():
            for client, (local_port, used) in list(clients.items()):
                if time.monotonic() - used > 2:
                    if client_port(await client.get(f"{url}/health")) == local_port:
                        clients[client] = (local_port, time.monotonic())
                    else:
                        del clients[client]
                        await client.aclose()
        if all(len(clients) >= each for clients in pinned.values()):
            return {pid: list(clients) for pid, clients in pinned.items()}
        client = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=1))
        local_port = client_port(await client.get(f"{url}/health"))
        owner = accepted_by(pids, port, local_port)
        if owner is not None and len(pinned[owner]) < each:
            pinned[owner][client] = (local_port, time.monotonic())
        else:
            await client.aclose()
    for client in (client for clients in pinned.values() for client in clients):
        await client.aclose()
    counts = {pid: len(clients) for pid, clients in pinned.items()}
    raise AssertionError(f"not {each} connections on each worker: {counts}")


async def fire(url: str, key: str, pids: set[int]) -> list[tuple[int, Any, int | None]]:
    """``REQUESTS`` requests at once, as many on each worker, every other one a stream."""
    pinned = await connections_on_each(url, pids, REQUESTS // len(pids))
    clients = [client for clients in pinned.values() for client in clients]
    try:
        return await asyncio.gather(*[call(client, url, key, stream=i % 2 == 1) for i, client in enumerate(clients)])
    finally:
        for client in clients:
            await client.aclose()


def recorded_by_process(gateway: Gateway, serve: Serve) -> dict[int, float]:
    """Requests each worker process recorded (``tallyhub_requests_total`` in its own file)."""
    directory = multiproc_dir(Path(gateway.env["TALLYHUB_DATA_DIR"]), serve.process.pid)
    counts = {}
    for path in directory.glob("counter_*.db"):
        metrics = MultiProcessCollector.merge([str(path)], accumulate=True)  # type: ignore[no-untyped-call]
        counts[int(path.stem.removeprefix("counter_"))] = sum(
            sample.value for metric in metrics for sample in metric.samples if sample.name == "tallyhub_requests_total"
        )
    return counts


def check_no_overdraft(gateway: Gateway, serve: Serve, key: str) -> None:
    # /ready was answered by one worker; the other may still be starting (fire waits until it
    # accepts connections too)
    wait_until(lambda: len(worker_pids(serve.process.pid)) == 2, 60, "two workers spawned")
    pids = worker_pids(serve.process.pid)
    outcomes = asyncio.run(fire(serve.url, key, pids))
    statuses = sorted(status for status, _, _ in outcomes)
    assert statuses == [200] * FUNDED + [402] * (REQUESTS - FUNDED), statuses
    for status, error, _ in outcomes:
        if status == 402:
            assert sorted(error) == ["error"] and sorted(error["error"]) == ["code", "message", "param", "type"], error
            assert error["error"]["code"] == "insufficient_credits", error
    charges = [charge for status, _, charge in outcomes if status == 200]
    assert charges == [WORST_CASE] * FUNDED  # each answer's receipt: the worst case it used

    wait_until(lambda: sum(recorded_by_process(gateway, serve).values()) == REQUESTS, 30, "every request recorded")
    # each worker recorded the half of the burst sent over its connections
    recorded = {pid: count for pid, count in recorded_by_process(gateway, serve).items() if pid in pids}
    assert recorded == {pid: REQUESTS // 2 for pid in pids}, recorded

    statement = cli(gateway.env, "statement", "acme")
    moves = [(entry["kind"], entry["amount"], entry["balance"]) for entry in statement["entries"]]
    grant = FUNDED * WORST_CASE
    # in ledger order: the grant, then exactly the K receipts, the running balance never below 0
    assert moves == [("grant", grant, grant)] + [
        ("charge", -WORST_CASE, grant - n * WORST_CASE) for n in range(1, FUNDED + 1)
    ], moves
    admin = {"authorization": f"Bearer {gateway.admin_key}"}
    balance = httpx.get(f"{serve.url}/admin/v1/accounts/acme/balance", headers=admin, timeout=30).json()
    assert (balance["balance"], balance["held"], balance["available"]) == (0, 0, 0), balance
    assert cli(gateway.env, "verify")["ok"] is True


def test_two_workers_on_sqlite_never_overdraw(tmp_path: Path, upstream: FakeOpenAIUpstream) -> None:
    gateway = Gateway.initialised(tmp_path)
    key = configure(gateway, upstream, "acme", format_credits(FUNDED * WORST_CASE))
    serve = Serve.start(gateway, workers=2)
    try:
        check_no_overdraft(gateway, serve, key)
    finally:
        serve.terminate()
        assert serve.exit_status(60) == 0, serve.log()


@pytest.mark.postgres
@pytest.mark.redis
def test_two_workers_in_server_mode_never_overdraw(
    tmp_path: Path, upstream: FakeOpenAIUpstream, pg_schemas: PgSchemas
) -> None:
    url = pg_schemas.new_url()
    gateway = Gateway.initialised(tmp_path, url, **server_env())
    key = configure(gateway, upstream, "acme", format_credits(FUNDED * WORST_CASE))
    worker = Worker.start(gateway.env, "--poll-seconds", "0.05")
    serve = Serve.start(gateway, workers=2)
    try:
        check_no_overdraft(gateway, serve, key)
        wait_until(Store(url).caught_up, 30, "the worker caught up")
    finally:
        serve.terminate()
        status = serve.exit_status(60)
        worker.kill()
    assert status == 0, serve.log()
