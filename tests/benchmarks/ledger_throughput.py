"""How many billed requests per second the ledger sustains, without HTTP: C client
threads each open a request (authenticate, route, price, hold) and complete it (settle +
record) against one hot account, through the group-commit writer, on SQLite or
PostgreSQL. Prints requests/s and checks the books balance exactly (0 overdraft).

    .venv/bin/python -m tests.benchmarks.ledger_throughput --store postgres --clients 64 --seconds 10

Only 127.0.0.1 is used; the run stops by itself after --seconds.
"""

import argparse
import os
import secrets
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
    charged: list[int] = []
    refused = [0]
    stop_at = time.monotonic() + args.seconds

    def client() -> None:
        while time.monotonic() < stop_at:
            try:
                opened = billing.open_request(key, SHAPE, request_id=uuid4())
            except InsufficientCredits:
                refused[0] += 1
                continue
            route = next(billing.router.routes(opened.targets[0]))
            charged.append(billing.complete_request(opened, route, Usage(input_tokens=120, output_tokens=30)).charge)

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    account = ledger.get_account("hot")
    assert account.balance == 10**12 - sum(charged) and account.held == 0 and account.available >= 0
    writer = ledger.writer
    print(
        f"{args.store}: {len(charged)} billed requests in {elapsed:.1f} s = {len(charged) / elapsed:,.0f}/s "
        f"with {args.clients} clients on one hot account; {refused[0]} refused; overdraft 0; "
        f"{writer.commands / max(writer.batches, 1):.1f} account changes per transaction"
    )


if __name__ == "__main__":
    main()
