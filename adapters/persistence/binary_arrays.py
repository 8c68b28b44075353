"""One-dimensional PostgreSQL arrays in the binary wire format (``array_recv``), for the batch insert.

A parameter sent in binary carries its element type in its header, and the server refuses an
array whose element type is not the one its statement was prepared with. psycopg picks an
integer array's element type by the values (``int2`` while every version fits), so a prepared
insert could be given ``int2[]`` one batch and ``int4[]`` the next; here each array's type is
fixed by the function that builds it. The format: dimensions (1), a has-nulls flag (0), the
element type's oid, the length and lower bound (1), then each element as its length and bytes.
No element is ever NULL here.
"""

import struct
from collections.abc import Sequence
from uuid import UUID

UUID_OID, INT4_OID, TEXT_OID, BYTEA_OID = 2950, 23, 25, 17
UUID_ARRAY_OID, INT4_ARRAY_OID, TEXT_ARRAY_OID, BYTEA_ARRAY_OID = 2951, 1007, 1009, 1001

_HEADER = struct.Struct("!iiIii")
_LENGTH = struct.Struct("!i")
_UUID_ELEMENT = struct.Struct("!i16s")
_INT4_ELEMENT = struct.Struct("!ii")


def _array(element_oid: int, count: int, body: bytes) -> bytes:
    return _HEADER.pack(1, 0, element_oid, count, 1) + body


def uuid_array(values: Sequence[UUID]) -> bytes:
    return _array(UUID_OID, len(values), b"".join([_UUID_ELEMENT.pack(16, value.bytes) for value in values]))


def int4_array(values: Sequence[int]) -> bytes:
    """Raises struct.error for a value outside int4 (as the server would refuse it)."""
    return _array(INT4_OID, len(values), b"".join([_INT4_ELEMENT.pack(4, value) for value in values]))


def text_array(values: Sequence[str]) -> bytes:
    return bytes_array(TEXT_OID, [value.encode() for value in values])


def bytea_array(values: Sequence[bytes]) -> bytes:
    return bytes_array(BYTEA_OID, values)


def bytes_array(element_oid: int, values: Sequence[bytes]) -> bytes:
    """An array of elements already in their binary form (text: UTF-8; bytea: the bytes)."""
    parts: list[bytes] = []
    for value in values:
        parts.append(_LENGTH.pack(len(value)))
        parts.append(value)
    return _array(element_oid, len(values), b"".join(parts))
