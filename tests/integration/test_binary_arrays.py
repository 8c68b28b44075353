"""The batch insert's binary arrays (adapters/persistence/binary_arrays.py) are read by
PostgreSQL as exactly the values they were built from, for any values the store can hold,
and a value outside its element type is refused before it is sent."""

import struct
from collections.abc import Iterator
from uuid import UUID

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import pq

from adapters.persistence.binary_arrays import (
    BYTEA_ARRAY_OID,
    INT4_ARRAY_OID,
    TEXT_ARRAY_OID,
    UUID_ARRAY_OID,
    bytea_array,
    int4_array,
    text_array,
    uuid_array,
)
from tests.conftest import PG_CONNINFO

pytestmark = pytest.mark.postgres

INT4 = st.integers(-(2**31), 2**31 - 1)
TEXT = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"))  # what PostgreSQL text holds


@pytest.fixture(scope="module")
def conn() -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(PG_CONNINFO, autocommit=True) as made:
        yield made


def read_back(conn: psycopg.Connection[tuple[object, ...]], array: bytes, type_oid: int) -> object:
    """The array as the server reads it, sent as a binary parameter of that type."""
    result = conn.pgconn.exec_params(b"SELECT $1", [array], [type_oid], [pq.Format.BINARY])
    assert result.status == pq.ExecStatus.TUPLES_OK, result.error_message
    loader = conn.adapters.get_loader(type_oid, pq.Format.TEXT)
    assert loader is not None
    return loader(type_oid, conn).load(result.get_value(0, 0) or b"")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.uuids(), min_size=1, max_size=20), st.lists(INT4, min_size=1, max_size=20))
def test_uuid_and_int4_arrays_read_back_as_built(
    conn: psycopg.Connection[tuple[object, ...]], ids: list[UUID], versions: list[int]
) -> None:
    assert read_back(conn, uuid_array(ids), UUID_ARRAY_OID) == ids
    assert read_back(conn, int4_array(versions), INT4_ARRAY_OID) == versions


@settings(max_examples=60, deadline=None)
@given(st.lists(TEXT, min_size=1, max_size=20), st.lists(st.binary(max_size=300), min_size=1, max_size=20))
def test_text_and_bytea_arrays_read_back_as_built(
    conn: psycopg.Connection[tuple[object, ...]], topics: list[str], states: list[bytes]
) -> None:
    assert read_back(conn, text_array(topics), TEXT_ARRAY_OID) == topics
    assert read_back(conn, bytea_array(states), BYTEA_ARRAY_OID) == states


def test_a_version_outside_int4_is_refused_before_it_is_sent() -> None:
    with pytest.raises(struct.error):
        int4_array([2**31])
