"""Fixtures for the read models on real databases: SQLite files in tmp_path, and a
fresh PostgreSQL schema per test (``th_test_<hex>``) that is dropped afterwards."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from adapters.settings import DatabaseConfig

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
