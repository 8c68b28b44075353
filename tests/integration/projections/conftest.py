"""Fixtures for the read models on real databases: SQLite files in tmp_path, a fresh
PostgreSQL schema per test (``th_test_<hex>``) that is dropped afterwards, and
``make_read_models`` over the ``database`` and ``ledger`` each test module provides."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from eventsourcing.application import Application

from adapters.settings import DatabaseConfig
from projections.read_models import ReadModels, build_read_models

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}


@pytest.fixture
def sqlite_database(tmp_path: Path) -> DatabaseConfig:
    return DatabaseConfig(kind="sqlite", sqlite_path=tmp_path / "tallyhub.sqlite")


@pytest.fixture
def postgres_database() -> Iterator[DatabaseConfig]:
    schema = f"th_test_{secrets.token_hex(6)}"
    try:
        admin = psycopg.connect(**PG, autocommit=True, connect_timeout=3)  # type: ignore[arg-type]
    except psycopg.OperationalError as error:
        pytest.skip(f"PostgreSQL is not available on 127.0.0.1:5432: {error}")
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield DatabaseConfig(
                kind="postgres", host=PG["host"], port=PG["port"], user=PG["user"], dbname=PG["dbname"], schema=schema
            )
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def make_read_models(database: DatabaseConfig, ledger: Application[Any]) -> Iterator[Callable[[], ReadModels]]:
    """Each call connects anew to the same read-model database (a restart, or another
    process); the first call creates the tables. All are closed at the end."""
    made: list[ReadModels] = []

    def make() -> ReadModels:
        read_models = build_read_models(database, ledger)
        if not made:
            read_models.create_tables()
        made.append(read_models)
        return read_models

    yield make
    for read_models in made:
        read_models.close()
