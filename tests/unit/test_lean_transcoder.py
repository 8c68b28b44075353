"""The lean transcoder's edge cases, one by one: where orjson alone would write other bytes
(small floats, NaN, ints beyond 64 bits, zones other than UTC) it still writes eventsourcing's;
where eventsourcing refuses (lone surrogates, unregistered types, cycles) it refuses the same
way; the wired-up ledgers use it."""

import enum
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    TranscodingNotRegisteredError,
    UUIDAsHex,
)

from adapters.bootstrap import in_memory_ledger
from adapters.persistence.lean_transcoder import LeanJSONTranscoder
from adapters.settings import parse_database_url


def registered(cls: type[JSONTranscoder]) -> JSONTranscoder:
    transcoder = cls()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return transcoder


STANDARD, LEAN = registered(JSONTranscoder), registered(LeanJSONTranscoder)


class Label(str):
    pass


class Level(enum.IntEnum):
    LOW = 1


cyclic: list[Any] = []
cyclic.append(cyclic)
deep: Any = "bottom"
for _ in range(300):
    deep = [deep]

WRITTEN_ALIKE = [
    pytest.param({"t": 1e-05, "u": 1.5e-07, "v": 1e16, "w": -0.0, "x": 5e-324}, id="floats-orjson-writes-otherwise"),
    pytest.param([float("nan"), float("inf"), float("-inf")], id="nan-and-infinities"),
    pytest.param({"big": 2**64, "neg": -(2**63) - 1, "edge": 2**64 - 1, "low": -(2**63)}, id="ints-around-64-bits"),
    pytest.param({"at": datetime(1, 1, 1), "utc": datetime(2026, 12, 7, 23, 21, 10, tzinfo=UTC)}, id="naive-and-utc"),
    pytest.param(
        {"at": datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=5, minutes=30, seconds=15)))}, id="odd-offset"
    ),
    pytest.param({"id": UUID(int=0), "amount": Decimal("-0.000"), "n": Decimal("NaN")}, id="uuid-decimal"),
    pytest.param({"s": '"\\\n\x00\x1f\x7f\u2028\u2029é😀'}, id="escapes-and-unicode"),
    pytest.param({3: "a", 2.5: "b", True: "c", None: "d"}, id="non-str-keys"),
    pytest.param({"label": Label("x"), Label("k"): 1, "level": Level.LOW}, id="subclasses-of-json-types"),
    pytest.param(("a", ("b",), [UUID(int=1)]), id="tuples"),
    pytest.param(deep, id="nested-300-deep"),
]


@pytest.mark.parametrize("value", WRITTEN_ALIKE)
def test_writes_eventsourcings_bytes(value: Any) -> None:
    assert LEAN.encode(value) == STANDARD.encode(value)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        pytest.param({"s": "\ud800"}, UnicodeEncodeError, id="lone-surrogate"),
        pytest.param({"on": date(2026, 1, 1)}, TranscodingNotRegisteredError, id="unregistered-type"),
        pytest.param({UUID(int=1): 1}, TypeError, id="uuid-key"),
        pytest.param(cyclic, ValueError, id="cycle"),
        pytest.param({"n": 10**5000}, ValueError, id="int-beyond-str-limit"),
    ],
)
def test_refuses_what_eventsourcing_refuses(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error) as standard:
        STANDARD.encode(value)
    with pytest.raises(error) as lean:
        LEAN.encode(value)
    assert type(lean.value) is type(standard.value)


def test_decodes_as_eventsourcing_does() -> None:
    state = {"at": datetime(2026, 1, 1, tzinfo=UTC), "id": UUID(int=5), "f": 1e-05, "big": 2**70}
    data = LEAN.encode(state)
    assert LEAN.decode(data) == STANDARD.decode(data) == state


def test_the_ledgers_are_wired_to_it(tmp_path: Any) -> None:
    assert type(in_memory_ledger().mapper.transcoder) is LeanJSONTranscoder
    env = parse_database_url(None, tmp_path).eventsourcing_env(create_tables=True)
    assert env["TRANSCODER_TOPIC"] == "adapters.persistence.lean_transcoder:LeanJSONTranscoder"
