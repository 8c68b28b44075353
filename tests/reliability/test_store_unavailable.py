"""A store outage — PostgreSQL unreachable, the pool out of connections, SQLite's disk full —
is answered 503 ``store_unavailable`` in OpenAI's error shape, and recorded with that status;
other store errors (a conflict, a bug) keep their own answers."""

import sqlite3

import eventsourcing.persistence as es_persistence
import orjson
import psycopg
import pytest
from psycopg_pool import PoolTimeout

from adapters.http.errors import response_for, status_of


@pytest.mark.parametrize(
    "outage",
    [
        es_persistence.OperationalError("couldn't get a connection after 10.00 sec"),
        es_persistence.InterfaceError("connection already closed"),
        psycopg.OperationalError("server closed the connection unexpectedly"),
        PoolTimeout("couldn't get a connection after 30.00 sec"),
        sqlite3.OperationalError("database or disk is full"),
    ],
)
def test_a_store_outage_is_a_503_store_unavailable_that_says_nothing_of_the_store(outage: Exception) -> None:
    response = response_for(outage)
    body = orjson.loads(bytes(response.body))
    assert (response.status_code, status_of(outage)) == (503, 503)
    assert body == {
        "error": {
            "message": "the store is unavailable; try again",
            "type": "server_error",
            "param": None,
            "code": "store_unavailable",
        }
    }


def test_an_integrity_error_is_still_a_500_internal_error() -> None:
    error = es_persistence.IntegrityError("duplicate key")
    assert status_of(error) == 500
    assert orjson.loads(bytes(response_for(error).body))["error"]["code"] == "internal_error"
