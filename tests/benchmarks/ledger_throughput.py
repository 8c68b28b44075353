"""How many billed requests per second the ledger sustains, without HTTP: C clients each
open a request (authenticate, route, price, hold) and complete it (settle + record) against
one hot account, through the group-commit writer, on SQLite or PostgreSQL. Prints
requests/s and checks the books balance exactly (0 overdraft); the account changes per
billed request go to stderr.

``--driver loop`` (the default: the gateway's path) runs the clients as tasks on one event
loop with the calls ``serve`` makes (``open_request_async``, ``confirm_hold``,
``complete_request_async``): one thread beside the writer, as in the server. As in ``serve``
since ef20adc, a plain answer's hold the hold gate admits is deferred and placed with its
settlement: one durable account change per billed request (the hold, the settlement and the
record in one transaction), not two; only the first requests, before the writer has told the
gate the account's room, save their hold first. ``--driver threads`` runs them as C threads
calling the blocking methods (the CLI's and tools' path, and the default before): the hold is
saved first there, two changes per billed request, and C threads and the writer take turns
at one interpreter lock, each wake-up of the writer after a read of the store waiting its
turn behind the clients.

    .venv/bin/python -m tests.benchmarks.ledger_throughput --store postgres --clients 64 --seconds 10 --driver loop

Only 127.0.0.1 is used; the run stops by itself after --seconds.
"""

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

from adapters.crypto.aes_gcm import AesGcmKeyVault
from adapters.crypto.key_digest import HmacApiKeyScheme
from adapters.http.errors import status_of
from adapters.settings import DatabaseConfig, parse_database_url
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.billing import RequestBilling, RequestShape
from application.health import CredentialHealth
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from application.routing import Router
from domain.errors import InsufficientCredits
from domain.usage import Usage

MODEL = "mock/mock-gpt"
PG_ADMIN = "host=127.0.0.1 user=postgres dbname=test"
SHAPE = RequestShape(MODEL, prompt_bytes=200, max_output_tokens=50, choices=1, stream=False)
USAGE = Usage(input_tokens=120, output_tokens=30)


@contextmanager
def bench_database(store: str, data_dir: Path) -> Iterator[DatabaseConfig]:
    """A fresh store for one benchmark run: a SQLite file in ``data_dir``, or a PostgreSQL
    schema of its own that is dropped afterwards."""
    if store != "postgres":
        yield parse_database_url(None, data_dir)
        return
    import psycopg

    schema = f"th_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield parse_database_url(f"postgresql://postgres@127.0.0.1:5432/test?schema={schema}", data_dir)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def build(database: DatabaseConfig) -> Ledger:
    ledger = Ledger(
        database.eventsourcing_env(create_tables=True),
        vault=AesGcmKeyVault(os.urandom(32)),
        key_scheme_factory=HmacApiKeyScheme,
        read_cache_seconds=1.0,
    )
    ledger.initialise()
    return ledger


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--driver", choices=["threads", "loop"], default="loop")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, bench_database(args.store, Path(tmp)) as database:
        ledger = build(database)
        try:
            run(ledger, args)
        finally:
            ledger.stop_group_commit()
            ledger.close()


def run(ledger: Ledger, args: argparse.Namespace) -> None:
    ProviderRegistry(ledger).register_provider(
        "mock", "openai-compatible", base_url="http://127.0.0.1:9/v1", region=None, secret="sk-bench-0000000000"
    )
    Prices(ledger).set_price(MODEL, price_from_credits(input="1", output="2"))
    Accounts(ledger).create_account("hot", starter_credits=10**12)
    key = ApiKeys(ledger).issue_api_key("hot").plaintext
    ledger.start_group_commit()
    billing = RequestBilling(
        ledger, Router(ledger, CredentialHealth()), mode="credits", hold_ttl=timedelta(minutes=5), status_of=status_of
    )
    drive = drive_on_loop if args.driver == "loop" else drive_on_threads
    cpu_started = time.process_time()
    charged, refused, elapsed = drive(billing, key, args.clients, args.seconds)
    cpu = time.process_time() - cpu_started  # this process's, every thread's: PostgreSQL's own is apart
    account = ledger.get_account("hot")
    assert account.balance == 10**12 - sum(charged) and account.held == 0 and account.available >= 0
    writer = ledger.writer
    assert writer is not None
    print(
        f"{args.store}: {len(charged)} billed requests in {elapsed:.1f} s = {len(charged) / elapsed:,.0f}/s "
        f"with {args.clients} clients ({args.driver}) on one hot account; {refused} refused; overdraft 0; "
        f"{writer.commands / max(writer.batches, 1):.1f} account changes per transaction; "
        f"{1e6 * cpu / max(len(charged), 1):.0f} us of this process's CPU per billed request"
    )
    # stderr: the smoke test reads stdout's one line exactly
    print(f"{writer.commands / max(len(charged), 1):.2f} account changes per billed request", file=sys.stderr)


def drive_on_threads(billing: RequestBilling, key: str, clients: int, seconds: float) -> tuple[list[int], int, float]:
    """C threads, each opening and completing requests one after another; returns the
    charges, the refusals and the seconds taken."""
    charged: list[int] = []
    refused = [0]
    stop_at = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < stop_at:
            try:
                opened = billing.open_request(key, SHAPE, request_id=uuid4())
            except InsufficientCredits:
                refused[0] += 1
                continue
            route = next(billing.router.routes(opened.targets[0]))
            charged.append(billing.complete_request(opened, route, USAGE).charge)

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return charged, refused[0], time.monotonic() - started


def drive_on_loop(billing: RequestBilling, key: str, clients: int, seconds: float) -> tuple[list[int], int, float]:
    """C tasks on one event loop, each serving requests one after another as ``serve`` does."""
    charged: list[int] = []
    refused = [0]

    async def client(stop_at: float) -> None:
        while time.monotonic() < stop_at:
            try:
                opened = await billing.open_request_async(key, SHAPE, request_id=uuid4())
                route = next(billing.router.routes(opened.targets[0]))
                await billing.confirm_hold(opened, route)
            except InsufficientCredits:
                refused[0] += 1
                continue
            charged.append((await billing.complete_request_async(opened, route, USAGE)).charge)

    async def all_clients() -> float:
        started = time.monotonic()
        await asyncio.gather(*(client(started + seconds) for _ in range(clients)))
        return time.monotonic() - started

    return charged, refused[0], asyncio.run(all_clients())


if __name__ == "__main__":
    main()
