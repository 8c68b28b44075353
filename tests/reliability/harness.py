"""What the reliability runs share: a fleet of real ``tallyhub serve`` (and, in server mode,
``tallyhub worker``) processes on fixed loopback ports that a run can SIGKILL and restart,
direct reads of the store they write (SQLite files or a PostgreSQL schema of the run's
own), and the client side of a mixed load (plain and streamed chat, idempotent grants,
signed payment webhooks) that records what every caller saw.

Nothing here stops the machine's shared PostgreSQL or Redis: server mode uses a schema and
a Redis key prefix of its own, dropped or left to expire at the end."""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson

from adapters.http.payments import sign
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import REPO, TALLYHUB, cli, free_port, gateway_env

PG_CONNINFO = "host=127.0.0.1 port=5432 user=postgres dbname=test"
REDIS_URL = "redis://127.0.0.1:6379/0"
UPSTREAM_KEY = "sk-upstream-reliability-5e21"
MODEL = "openai/gpt-4o-mini"
WEBHOOK_SECRET = "whsec-reliability-run-0c1d2e3f"
ACCOUNT = "acme"
START_CREDITS = 10_000
CHAT = {"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "hello"}]}
STREAM = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
READ_MODEL_TABLES = {  # table -> ORDER BY (every column: rows compared exactly)
    "th_rm_balances": "account_id",
    "th_rm_open_holds": "account_id, request_id",
    "th_rm_expiring_grants": "account_id, grant_version",
    "th_rm_usage_hourly": "account_id, api_key_id, model, hour",
    "th_rm_request_log": "request_id",
    "th_rm_ledger_entries": "position",
    "th_rm_provider_hourly": "1, 2, 3, 4, 5",
}


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``condition`` held (polled); AssertionError after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)
    return time.monotonic() - started


class StoreReader:
    """SQL reads of what the processes wrote: the read models (and, for SQLite, their file)."""

    def __init__(self, database_url: str | None, data_dir: Path, conninfo: str = PG_CONNINFO) -> None:
        self.schema = parse_qs(urlsplit(database_url).query)["schema"][0] if database_url else None
        self.conninfo = conninfo
        self.read_models_path = data_dir / "tallyhub-read-models.sqlite"

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.schema is None:
            with sqlite3.connect(self.read_models_path, timeout=30) as conn:
                return conn.execute(sql, params).fetchall()
        import psycopg

        with psycopg.connect(self.conninfo, options=f"-c search_path={self.schema}") as pg:
            return pg.execute(sql.replace("?", "%s"), params).fetchall()

    def tables(self) -> dict[str, list[tuple[Any, ...]]]:
        return {
            table: self.rows(f"SELECT * FROM {table} ORDER BY {order}") for table, order in READ_MODEL_TABLES.items()
        }

    def open_holds(self) -> list[tuple[Any, ...]]:
        return self.rows("SELECT request_id, amount, expires_at FROM th_rm_open_holds")

    def hold_overshoot(self) -> float:
        """Seconds the longest-expired hold still open is past its deadline (0: none is)."""
        now = datetime.now(UTC)
        return max([0.0, *((now - _utc(expires)).total_seconds() for _, _, expires in self.open_holds())])

    def charges(self) -> dict[str, list[int]]:
        """Request id (hex, no dashes) -> the amounts charged for it (positive)."""
        found: dict[str, list[int]] = {}
        for request_id, amount in self.rows(
            "SELECT request_id, amount FROM th_rm_ledger_entries WHERE kind = 'charge'"
        ):
            found.setdefault(_hex(request_id), []).append(-int(amount))
        return found

    def grants(self) -> dict[str, list[int]]:
        """Idempotency key -> the amounts granted under it."""
        found: dict[str, list[int]] = {}
        for key, amount in self.rows(
            "SELECT idempotency_key, amount FROM th_rm_ledger_entries"
            " WHERE kind = 'grant' AND idempotency_key IS NOT NULL"
        ):
            found.setdefault(str(key), []).append(int(amount))
        return found


def _utc(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _hex(value: Any) -> str:
    return str(value).replace("-", "").lower()


@dataclass
class Proc:
    kind: str  # "serve" | "worker"
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Fleet:
    """``serve`` processes on fixed ports (a restarted one takes its port again) and, in server
    mode, ``worker`` processes; ``kill`` is SIGKILL, never a clean stop."""

    env: dict[str, str]
    admin_key: str
    procs: list[Proc] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return Path(self.env["TALLYHUB_DATA_DIR"])

    def add(self, kind: str) -> Proc:
        port = free_port() if kind == "serve" else 0
        proc = Proc(kind, port, self.data_dir / f"{kind}-{len(self.procs)}.log")
        self.procs.append(proc)
        self.start(proc)
        if kind == "worker":
            # a fault must meet a running worker: one still opening its services when the store
            # goes away exits at start (a supervisor restarts it; this harness does not)
            self._wait_started(proc)
        return proc

    def start(self, proc: Proc) -> None:
        args = ["serve", "--port", str(proc.port)] if proc.kind == "serve" else ["worker", "--poll-seconds", "0.2"]
        with open(proc.log_path, "ab") as log:
            proc.process = subprocess.Popen(
                [*TALLYHUB, *args], env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
            )
        proc.starts += 1
        if proc.kind == "serve":
            self._wait_listening(proc)

    def _wait_listening(self, proc: Proc, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.process is not None
            if proc.process.poll() is not None:
                raise AssertionError(f"serve exited with {proc.process.returncode}:\n{self.log(proc)}")
            try:
                httpx.get(f"http://127.0.0.1:{proc.port}/health", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError(f"serve did not listen on {proc.port}:\n{self.log(proc)}")

    def _wait_started(self, proc: Proc, timeout: float = 60) -> None:
        """Until the worker logs that it started (restarts are not waited for: a crash run may
        kill one while it starts)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.process is not None
            if proc.process.poll() is not None:
                raise AssertionError(f"worker exited with {proc.process.returncode}:\n{self.log(proc)}")
            if "worker started" in proc.log_path.read_text(errors="replace"):
                return
            time.sleep(0.05)
        raise AssertionError(f"the worker did not start:\n{self.log(proc)}")

    def kill(self, proc: Proc) -> None:
        if proc.alive:
            assert proc.process is not None
            os.kill(proc.process.pid, signal.SIGKILL)
            proc.process.wait(30)
            proc.kills += 1

    def ensure_all_running(self) -> None:
        for proc in self.procs:
            if not proc.alive:
                self.start(proc)

    def stop_all(self) -> list[int]:
        """SIGTERM every process; their exit codes."""
        codes = []
        for proc in self.procs:
            if proc.alive:
                assert proc.process is not None
                proc.process.send_signal(signal.SIGTERM)
        for proc in self.procs:
            if proc.process is None:
                continue
            try:
                codes.append(proc.process.wait(60))
            except subprocess.TimeoutExpired:
                proc.process.kill()
                codes.append(proc.process.wait())
        return codes

    def serve_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p.port}" for p in self.procs if p.kind == "serve"]

    def log(self, proc: Proc) -> str:
        return proc.log_path.read_text(errors="replace")[-4000:]

    def logs(self) -> str:
        return "\n".join(p.log_path.read_text(errors="replace") for p in self.procs if p.log_path.exists())


@dataclass
class Setup:
    fleet: Fleet
    store: StoreReader
    upstream: FakeOpenAIUpstream
    api_key: str
    schema: str | None
    database_url: str | None
    pg_conninfo: str = PG_CONNINFO


def set_up(
    data_dir: Path,
    *,
    mode: str,
    serves: int,
    workers: int,
    chunk_delay: float = 0.03,
    pg_port: int = 5432,
    redis_url: str = REDIS_URL,
    pg_conninfo: str = PG_CONNINFO,
    **extra: str,
) -> Setup:
    """A fake upstream, a gateway ``init``ed and configured through the CLI (account ``acme``
    with START_CREDITS), and its processes started. ``mode``: ``embedded`` (SQLite),
    ``postgres`` (PostgreSQL without Redis) or ``server`` (PostgreSQL and Redis); the
    processes reach PostgreSQL on ``pg_port`` (a proxy's, to cut it) and Redis at ``redis_url``;
    the run's schema is made through ``pg_conninfo`` (the shared server's unless a private one's)."""
    upstream = FakeOpenAIUpstream(api_key=UPSTREAM_KEY, chunk_delay=chunk_delay).start()
    schema = database_url = None
    settings = {"TALLYHUB_PAYMENTS_WEBHOOK_SECRET": WEBHOOK_SECRET, **extra}
    if mode in ("server", "postgres"):
        import psycopg

        schema = f"th_rel_{secrets.token_hex(4)}"
        with psycopg.connect(pg_conninfo, autocommit=True) as pg:
            pg.execute(f"CREATE SCHEMA {schema}")
        dbname = dict(part.split("=", 1) for part in pg_conninfo.split())["dbname"]
        database_url = f"postgresql://postgres@127.0.0.1:{pg_port}/{dbname}?schema={schema}"
    if mode == "server":
        settings.update(TALLYHUB_REDIS_URL=redis_url, TALLYHUB_REDIS_PREFIX=f"th-rel-{secrets.token_hex(4)}")
    env = gateway_env(data_dir, database_url, **settings)
    admin_key = cli(env, "init")["admin_key"]
    cli(
        env,
        "providers",
        "add",
        "openai",
        "--kind",
        "openai",
        "--base-url",
        upstream.base_url,
        "--api-key-stdin",
        stdin=UPSTREAM_KEY + "\n",
    )
    cli(env, "prices", "set", MODEL, "--input", "2", "--output", "8")
    cli(env, "accounts", "create", ACCOUNT)
    cli(env, "credits", "grant", ACCOUNT, str(START_CREDITS), "--reason", "reliability run")
    api_key = cli(env, "keys", "issue", ACCOUNT, "--name", "reliability")["key"]
    fleet = Fleet(env, admin_key)
    for _ in range(serves):
        fleet.add("serve")
    for _ in range(workers):
        fleet.add("worker")
    store = StoreReader(database_url, data_dir, pg_conninfo)
    return Setup(fleet, store, upstream, api_key, schema, database_url, pg_conninfo)


def tear_down(setup: Setup) -> None:
    setup.fleet.stop_all()
    setup.upstream.stop()
    if setup.schema:
        import psycopg

        with psycopg.connect(setup.pg_conninfo, autocommit=True) as pg:
            pg.execute(f"DROP SCHEMA IF EXISTS {setup.schema} CASCADE")


# --- the client side: one call per operation, recording what its caller saw ---


@dataclass
class Outcome:
    kind: str  # plain | stream | grant | payment
    status: int | None  # None: no HTTP answer (connection refused or cut before the headers)
    request_id: str | None = None  # hex, no dashes
    charge: int | None = None  # the receipt the caller saw (header, or the final usage chunk)
    complete: bool = False  # a stream that reached its usage chunk and [DONE]
    error: str = ""
    key: str = ""  # grants and payments: the idempotency key / payment id


async def chat(client: httpx.AsyncClient, url: str, api_key: str, *, stream: bool) -> Outcome:
    headers = {"authorization": f"Bearer {api_key}", "content-type": "application/json"}
    body = orjson.dumps(STREAM if stream else CHAT)
    kind = "stream" if stream else "plain"
    outcome = Outcome(kind, None)
    try:
        async with client.stream("POST", url + "/v1/chat/completions", content=body, headers=headers) as response:
            outcome.status = response.status_code
            outcome.request_id = _hex(response.headers.get("x-request-id", "")) or None
            if not stream or response.status_code != 200:
                if response.status_code == 200:
                    outcome.charge = int(response.headers["x-tallyhub-charge-nanocredits"])
                data = await response.aread()
                outcome.complete = response.status_code == 200
                if response.status_code != 200:
                    outcome.error = data.decode(errors="replace")[:300]
                return outcome
            done = False
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    outcome.error = json.dumps(chunk["error"])[:300]
                usage = chunk.get("usage")
                if usage and "cost_nanocredits" in usage:
                    outcome.charge = int(usage["cost_nanocredits"])
            outcome.complete = done and outcome.charge is not None
    except httpx.TransportError as error:
        outcome.error = f"{type(error).__name__}: {error}"
    return outcome


async def grant(client: httpx.AsyncClient, url: str, admin_key: str, key: str) -> Outcome:
    body = {"amount": "1", "reason": f"run grant {key}", "idempotency_key": key}
    return await _admin_call(
        client,
        "grant",
        key,
        "POST",
        f"{url}/admin/v1/accounts/{ACCOUNT}/grants",
        json=body,
        headers={"authorization": f"Bearer {admin_key}"},
    )


async def payment(client: httpx.AsyncClient, url: str, payment_id: str) -> Outcome:
    raw = orjson.dumps(
        {
            "id": f"evt_{payment_id}",
            "type": "payment.succeeded",
            "data": {"account": ACCOUNT, "payment_id": payment_id, "amount": "2"},
        }
    )
    headers = {"tallyhub-signature": sign(WEBHOOK_SECRET, raw, int(time.time())), "content-type": "application/json"}
    return await _admin_call(
        client, "payment", payment_id, "POST", f"{url}/admin/v1/payments/webhook", content=raw, headers=headers
    )


async def _admin_call(client: httpx.AsyncClient, kind: str, key: str, method: str, url: str, **kwargs: Any) -> Outcome:
    outcome = Outcome(kind, None, key=key)
    try:
        response = await client.request(method, url, **kwargs)
        outcome.status = response.status_code
        outcome.request_id = _hex(response.headers.get("x-request-id", "")) or None
        if response.status_code >= 300:
            outcome.error = response.text[:300]
    except httpx.TransportError as error:
        outcome.error = f"{type(error).__name__}: {error}"
    return outcome


def full_costs(api_key: str, url: str) -> tuple[Outcome, Outcome]:
    """One plain answer and one complete stream, whose receipts are what every whole answer
    costs (the fake's answers are fixed)."""
    import asyncio

    async def both() -> tuple[Outcome, Outcome]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await chat(client, url, api_key, stream=False), await chat(client, url, api_key, stream=True)

    plain, stream = asyncio.run(both())
    assert plain.status == 200 and stream.complete, (plain, stream)
    return plain, stream
