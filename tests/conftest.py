"""Shared fixtures: in-memory ledgers for unit tests, and a PostgreSQL schema of its
own for every test session (runs never see each other's data)."""

import os
import secrets
from collections.abc import Iterator
from datetime import timedelta

import pytest

from adapters.crypto.aes_gcm import AesGcmKeyVault
from adapters.crypto.key_digest import HmacApiKeyScheme
from application.billing import RequestBilling
from application.ledger import Ledger
from tests.fakes.clock import FakeClock

PG_CONNINFO = "host=127.0.0.1 port=5432 user=postgres dbname=test"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ledger(clock: FakeClock) -> Iterator[Ledger]:
    app = Ledger({"PERSISTENCE_MODULE": "eventsourcing.popo"}, vault=AesGcmKeyVault(os.urandom(32)),
                 key_scheme_factory=HmacApiKeyScheme, clock=clock)
    app.initialise()
    yield app
    app.close()


@pytest.fixture
def credits_billing(ledger: Ledger) -> RequestBilling:
    return RequestBilling(ledger, mode="credits", hold_ttl=timedelta(minutes=15))


@pytest.fixture
def track_billing(ledger: Ledger) -> RequestBilling:
    return RequestBilling(ledger, mode="track", hold_ttl=timedelta(minutes=15))


@pytest.fixture(scope="session")
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema for this test session, dropped at the end."""
    psycopg = pytest.importorskip("psycopg")
    schema = f"th_test_{secrets.token_hex(6)}"
    with psycopg.connect(PG_CONNINFO, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield schema
    with psycopg.connect(PG_CONNINFO, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def pg_database_url(pg_schema: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A schema of its own for one test, inside the session's database."""
    psycopg = pytest.importorskip("psycopg")
    schema = f"{pg_schema}_{secrets.token_hex(3)}"
    with psycopg.connect(PG_CONNINFO, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield f"postgresql://postgres@127.0.0.1:5432/test?schema={schema}"
    with psycopg.connect(PG_CONNINFO, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
