"""Shared fixtures: in-memory ledgers for unit tests, and a PostgreSQL schema of its
own for every test session (runs never see each other's data)."""

import random
import secrets
from collections.abc import Iterator
from datetime import timedelta

import pytest

from adapters.bootstrap import in_memory_ledger
from adapters.http.errors import status_of
from application.billing import RequestBilling
from application.health import CredentialHealth
from application.ledger import Ledger
from application.routing import Router
from tests.fakes.clock import FakeClock

PG_CONNINFO = "host=127.0.0.1 port=5432 user=postgres dbname=test"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ledger(clock: FakeClock) -> Iterator[Ledger]:
    app = in_memory_ledger(clock=clock)
    app.initialise()
    yield app
    app.close()


@pytest.fixture
def health() -> CredentialHealth:
    return CredentialHealth()


@pytest.fixture
def router(ledger: Ledger, health: CredentialHealth) -> Router:
    return Router(ledger, health, rng=random.Random(7))


@pytest.fixture
def credits_billing(ledger: Ledger, router: Router) -> RequestBilling:
    return RequestBilling(ledger, router, mode="credits", hold_ttl=timedelta(minutes=15), status_of=status_of)


@pytest.fixture
def track_billing(ledger: Ledger, router: Router) -> RequestBilling:
    return RequestBilling(ledger, router, mode="track", hold_ttl=timedelta(minutes=15), status_of=status_of)


class PgSchemas:
    """Creates PostgreSQL schemas for this test session and drops them all at its end."""

    def __init__(self) -> None:
        self.prefix = f"th_test_{secrets.token_hex(4)}"
        self.created: list[str] = []

    def new(self) -> str:
        import psycopg

        schema = f"{self.prefix}_{len(self.created)}"
        with psycopg.connect(PG_CONNINFO, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        self.created.append(schema)
        return schema

    def new_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:5432/test?schema={self.new()}"

    def drop_all(self) -> None:
        import psycopg

        with psycopg.connect(PG_CONNINFO, autocommit=True) as conn:
            for schema in self.created:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(scope="session")
def pg_schemas() -> Iterator[PgSchemas]:
    schemas = PgSchemas()
    yield schemas
    schemas.drop_all()


@pytest.fixture
def pg_database_url(pg_schemas: PgSchemas) -> str:
    """A PostgreSQL schema of its own for one test."""
    return pg_schemas.new_url()
