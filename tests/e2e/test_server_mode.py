"""Server mode on the real PostgreSQL and Redis: ``serve`` processes with TALLYHUB_REDIS_URL
leave the read models to ``tallyhub worker`` (only explicit catch-up reads move them), a
worker brings them up to date soon after requests — woken through Redis, not by its poll —
two workers give exactly the read models one gives (those a rebuild from zero gives, which
agree with the ledger), a worker killed with SIGKILL resumes exactly, ``worker`` refuses
embedded mode, and requests do not notice Redis being down. Every gateway has a schema
and a Redis prefix of its own, so parallel runs never see each other."""

import asyncio
import json
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import psycopg
import pytest

from tests.conftest import PG_CONNINFO, PgSchemas
from tests.e2e.conftest import MODEL, configure
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import REPO, TALLYHUB, Gateway, cli, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

REDIS_URL = "redis://127.0.0.1:6379/0"
GRANT_CREDITS = 1000
BODY = orjson.dumps({"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "hello"}]})
READ_MODEL_TABLES = {  # table -> ORDER BY
    "th_rm_balances": "account_id",
    "th_rm_open_holds": "account_id, request_id",
    "th_rm_expiring_grants": "account_id, grant_version",
    "th_rm_usage_hourly": "account_id, api_key_id, model, hour",
    "th_rm_request_log": "request_id",
    "th_rm_ledger_entries": "position",
    "th_rm_provider_hourly": "1, 2, 3, 4, 5",
    "th_rm_audit": "position",
}
PROJECTIONS = {"balances", "usage", "request_log", "ledger_entries", "provider_hourly", "alerts", "audit"}  # 18, 19


class Store:
    """Direct reads of one gateway's PostgreSQL schema (what the processes wrote)."""

    def __init__(self, database_url: str) -> None:
        self.schema = parse_qs(urlsplit(database_url).query)["schema"][0]

    def _rows(self, sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(PG_CONNINFO, options=f"-c search_path={self.schema}") as conn:
            return conn.execute(sql).fetchall()

    def positions(self) -> dict[str, int]:
        return dict(self._rows("SELECT name, position FROM th_rm_tracking"))  # type: ignore[arg-type]

    def head(self) -> int:
        return self._rows("SELECT COALESCE(MAX(notification_id), 0) FROM ledger_events")[0][0]

    def caught_up(self) -> bool:
        positions = self.positions()
        return set(positions) == PROJECTIONS and set(positions.values()) == {self.head()}

    def tables(self) -> dict[str, list[tuple[Any, ...]]]:
        return {
            table: self._rows(f"SELECT * FROM {table} ORDER BY {order}") for table, order in READ_MODEL_TABLES.items()
        }

    def scalar(self, sql: str) -> Any:
        return self._rows(sql)[0][0]


@dataclass
class Worker:
    process: subprocess.Popen[str]
    log_path: Path

    @classmethod
    def start(cls, env: dict[str, str], *args: str) -> "Worker":
        log_path = Path(env["TALLYHUB_DATA_DIR"]) / f"worker-{secrets.token_hex(3)}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [*TALLYHUB, "worker", "--json", *args], env=env, cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=log
            )
        return cls(process, log_path)

    def stop(self) -> dict[str, Any]:
        """SIGTERM: a clean stop within seconds, with its report."""
        self.process.send_signal(signal.SIGTERM)
        try:
            out, _ = self.process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise AssertionError(f"the worker did not stop on SIGTERM:\n{self.log()}") from None
        assert self.process.returncode == 0, f"worker exited with {self.process.returncode}:\n{self.log()}"
        return json.loads(out)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=20)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Server:
    gateway: Gateway
    store: Store
    api_key: str
    workers: list[Worker]

    def worker(self, *args: str, env: dict[str, str] | None = None) -> Worker:
        self.workers.append(Worker.start(env or self.gateway.env, *args))
        return self.workers[-1]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``condition`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)
    return time.monotonic() - started


def server_env(**extra: str) -> dict[str, str]:
    return {"TALLYHUB_REDIS_URL": REDIS_URL, "TALLYHUB_REDIS_PREFIX": f"th-test-{secrets.token_hex(6)}", **extra}


@pytest.fixture
def server(
    tmp_path: Path, upstream: FakeOpenAIUpstream, pg_schemas: PgSchemas, request: pytest.FixtureRequest
) -> Iterator[Server]:
    extra = getattr(request, "param", {})
    url = pg_schemas.new_url()
    gateway = Gateway.initialised(tmp_path, url, **server_env(**extra))
    api_key = configure(gateway, upstream, "acme", str(GRANT_CREDITS))
    gateway.start()
    started = Server(gateway, Store(url), api_key, [])
    try:
        yield started
    finally:
        gateway.stop()
        for worker in started.workers:
            worker.kill()


async def _fire(urls: list[str], key: str, count: int) -> list[httpx.Response]:
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=16)) as client:
        return await asyncio.gather(
            *[
                client.post(urls[i % len(urls)] + "/v1/chat/completions", content=BODY, headers=headers)
                for i in range(count)
            ]
        )


def fire(server: Server, count: int, *, urls: list[str] | None = None) -> int:
    """``count`` requests, all of which must succeed; returns the total charged."""
    responses = asyncio.run(_fire(urls or [server.gateway.url], server.api_key, count))
    assert [r.status_code for r in responses] == [200] * count, [r.text for r in responses if r.status_code != 200]
    return sum(int(r.headers["x-tallyhub-charge-nanocredits"]) for r in responses)


def assert_books_agree(server: Server, charged: int, requests: int) -> dict[str, list[tuple[Any, ...]]]:
    """The read models match the ledger (``verify``) and the charges the clients saw, and a
    rebuild from zero by one process gives exactly the same tables; returns them."""
    store = server.store
    assert store.caught_up()
    tables = store.tables()
    assert cli(server.gateway.env, "verify")["ok"] is True
    grant = GRANT_CREDITS * 10**9
    assert store.scalar("SELECT balance FROM th_rm_balances") == grant - charged
    assert store.scalar("SELECT SUM(charge) FROM th_rm_usage_hourly") == charged
    assert store.scalar("SELECT SUM(requests) FROM th_rm_usage_hourly") == requests
    assert store.scalar("SELECT COUNT(*) FROM th_rm_request_log") == requests
    assert store.scalar("SELECT COUNT(*) FROM th_rm_ledger_entries WHERE kind = 'charge'") == requests
    assert store.scalar("SELECT -SUM(amount) FROM th_rm_ledger_entries WHERE kind = 'charge'") == charged
    cli(server.gateway.env, "projections", "rebuild")
    assert store.tables() == tables
    return tables


def test_serve_with_redis_leaves_the_projections_to_the_worker_which_is_woken_at_once(server: Server) -> None:
    store = server.store
    before, head_before = store.positions(), store.head()
    charged = fire(server, 20)
    time.sleep(1.0)  # the in-process poller of embedded mode catches up every 50 ms
    assert store.head() > head_before
    assert store.positions() == before, "serve advanced the read models by itself"

    worker = server.worker("--poll-seconds", "60")  # so only a wake-up can make it quick
    wait_until(store.caught_up, 30, "the worker caught up the backlog")
    for _ in range(3):
        head = store.head()
        charged += fire(server, 10)
        assert store.head() > head
        # it polls every 60 s: catching up within the wait means it was woken (counted below)
        wait_until(store.caught_up, 30, "the worker caught up after requests")
    report = worker.stop()
    assert report["stopped"] is True and report["wakes"] >= 3
    assert report["positions"] == store.positions()
    assert_books_agree(server, charged, 50)


def test_admin_reads_and_the_balance_command_catch_up_without_a_worker(server: Server) -> None:
    store = server.store
    before = store.positions()
    charged = fire(server, 10)
    time.sleep(0.5)
    assert store.positions() == before
    grant = GRANT_CREDITS * 10**9
    assert server.gateway.balance("acme")["balance"] == grant - charged  # the admin API catches up first
    assert store.caught_up()
    charged += fire(server, 5)
    assert cli(server.gateway.env, "balance", "acme")["balance"] == grant - charged  # and so does the CLI
    assert store.caught_up()


def test_two_workers_give_the_same_read_models_as_one(server: Server) -> None:
    server.gateway.start()  # a second serve process on the same PostgreSQL and Redis
    urls = [server.gateway.url_of(0), server.gateway.url_of(1)]
    workers = [server.worker("--poll-seconds", "0.05"), server.worker("--poll-seconds", "0.05")]
    charged = 0
    for _ in range(4):
        charged += fire(server, 40, urls=urls)
    wait_until(server.store.caught_up, 30, "two workers caught up")
    reports = [worker.stop() for worker in workers]
    assert all(report["wakes"] >= 1 for report in reports), reports
    assert_books_agree(server, charged, 160)


def test_a_worker_killed_mid_catch_up_resumes_exactly(server: Server) -> None:
    store = server.store
    charged = fire(server, 250)  # a backlog: no worker runs
    start, head = store.positions(), store.head()
    assert set(start.values()) != {head}
    first = server.worker()
    wait_until(lambda: store.positions() != start, 30, "the first worker started applying")
    first.kill()  # SIGKILL: no clean stop, maybe inside a transaction
    at_kill = store.positions()
    assert all(start.get(name, 0) <= at_kill[name] <= head for name in at_kill)
    assert set(at_kill) != PROJECTIONS or min(at_kill.values()) < head, "killed too late: nothing left to resume"
    second = server.worker()
    wait_until(store.caught_up, 30, "the restarted worker caught up")
    second.stop()
    assert_books_agree(server, charged, 250)


def test_the_worker_refuses_embedded_mode_and_says_why(tmp_path: Path, pg_schemas: PgSchemas) -> None:
    cases = [
        (Gateway.initialised(tmp_path / "pg", pg_schemas.new_url()).env, "TALLYHUB_REDIS_URL is not set"),
        (Gateway.initialised(tmp_path / "sqlite", None, **server_env()).env, "the store is SQLite"),
    ]
    for env, reason in cases:
        for args in (["--json"], []):
            done = subprocess.run(
                [*TALLYHUB, "worker", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 1
            message = json.loads(done.stdout)["error"]["message"] if args else done.stderr
            assert reason in message and "embedded mode" in message and "serve" in message, message


@pytest.mark.parametrize("server", [{"TALLYHUB_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}], indirect=True)
def test_requests_do_not_notice_redis_being_down_and_workers_poll(server: Server) -> None:
    headers = {"authorization": f"Bearer {server.api_key}", "content-type": "application/json"}
    worker = server.worker("--poll-seconds", "0.2")  # its Redis is down too
    latencies, charged = [], 0
    with httpx.Client(timeout=10) as client:
        for _ in range(30):
            started = time.perf_counter()
            response = client.post(server.gateway.url + "/v1/chat/completions", content=BODY, headers=headers)
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
            charged += int(response.headers["x-tallyhub-charge-nanocredits"])
    # never waits for Redis on each request: a bound far above one request, not a speed check
    # (the machine is shared); the one log line below shows it gave up on Redis once
    assert max(latencies) < 5.0, latencies
    wait_until(server.store.caught_up, 10, "the worker caught up by polling")
    worker.stop()
    assert server.gateway.logs().count("cannot wake the workers through Redis") == 1, server.gateway.logs()
    assert "cannot listen on Redis" in worker.log()
    assert_books_agree(server, charged, 30)
