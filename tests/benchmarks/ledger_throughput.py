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
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

from adapters.crypto.aes_gcm import AesGcmKeyVault
from adapters.crypto.key_digest import HmacApiKeyScheme
from adapters.settings import parse_database_url
from application.billing import RequestBilling, RequestShape
from application.health import CredentialHealth
from application.ledger import Ledger
from application.pricing_input import price_from_credits
from application.routing import Router
from domain.errors import InsufficientCredits
from domain.usage import Usage

MODEL = "mock/mock-gpt"
SHAPE = RequestShape(MODEL, prompt_bytes=200, max_output_tokens=50, choices=1, stream=False)


def build(store: str, data_dir: Path) -> tuple[Ledger, str | None]:
    schema = None
    url = None
    if store == "postgres":
        import psycopg

        schema = f"th_bench_{secrets.token_hex(4)}"
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        url = f"postgresql://postgres@127.0.0.1:5432/test?schema={schema}"
    env = parse_database_url(url, data_dir).eventsourcing_env(create_tables=True)
    ledger = Ledger(env, vault=AesGcmKeyVault(os.urandom(32)), key_scheme_factory=HmacApiKeyScheme)
    ledger.initialise()
    ledger.read_cache_seconds = 1.0
    return ledger, schema


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ledger, schema = build(args.store, Path(tmp))
        try:
            run(ledger, args)
        finally:
            ledger.stop_group_commit()
            ledger.close()
            if schema:
                import psycopg

                with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA {schema} CASCADE")


def run(ledger: Ledger, args: argparse.Namespace) -> None:
    ledger.register_provider("mock", "openai-compatible", base_url="http://127.0.0.1:9/v1", region=None,
                             secret="sk-bench-0000000000")
    ledger.set_price(MODEL, price_from_credits(input="1", output="2"))
    ledger.create_account("hot", starter_credits=10**12)
    key = ledger.issue_api_key("hot").plaintext
    ledger.start_group_commit()
    billing = RequestBilling(ledger, Router(ledger, CredentialHealth()), mode="credits", hold_ttl=timedelta(minutes=5))
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
    print(f"{args.store}: {len(charged)} billed requests in {elapsed:.1f} s = {len(charged) / elapsed:,.0f}/s "
          f"with {args.clients} clients on one hot account; {refused[0]} refused; overdraft 0; "
          f"{writer.commands / max(writer.batches, 1):.1f} account changes per transaction")


if __name__ == "__main__":
    main()
