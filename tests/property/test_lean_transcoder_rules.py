"""The lean transcoder (adapters/persistence/lean_transcoder.py) writes eventsourcing's bytes:
for any nested value of every type a state can hold (any unicode text, ints of any size,
floats with NaN and infinities, UUIDs, naive and aware datetimes, Decimals, a registered
custom type, lists, tuples, dicts with str and non-str keys, subclasses of JSON's types,
unregistered types), ``encode`` gives byte for byte what ``JSONTranscoder.encode`` gives, or
both raise the same kind of error; and either transcoder reads those bytes to equal objects.
The comparison is strong enough to matter: it finds a counterexample for a variant that lets
orjson write floats itself."""

import enum
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, JSONTranscoder, Transcoding, UUIDAsHex
from hypothesis import find, given, settings
from hypothesis import strategies as st

from adapters.persistence.lean_transcoder import LeanJSONTranscoder


class Point:
    """A custom type with a registered transcoding whose data holds transcoded values itself."""

    def __init__(self, at: datetime, ref: UUID, tags: list[str]) -> None:
        self.at, self.ref, self.tags = at, ref, tags

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.at, self.ref, self.tags) == (other.at, other.ref, other.tags)

    def __repr__(self) -> str:  # compared by repr below, where NaN != NaN would spoil ==
        return f"Point({self.at!r}, {self.ref!r}, {self.tags!r})"


class PointAsDict(Transcoding):
    type = Point
    name = "point"

    def encode(self, obj: Point) -> dict[str, Any]:
        return {"at": obj.at, "ref": obj.ref, "tags": obj.tags}

    def decode(self, data: dict[str, Any]) -> Point:
        return Point(data["at"], data["ref"], data["tags"])


class Label(str):
    """A str subclass: json writes it as a str without asking any transcoding."""


class Level(enum.IntEnum):
    LOW = 1


def transcoders(cls: type[JSONTranscoder]) -> JSONTranscoder:
    """As the Ledger's application registers them, plus one custom transcoding."""
    transcoder = cls()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO(), PointAsDict()):
        transcoder.register(transcoding)
    return transcoder


STANDARD = transcoders(JSONTranscoder)
LEAN = transcoders(LeanJSONTranscoder)

offsets = st.builds(
    lambda minutes, seconds, micros: timezone(timedelta(minutes=minutes, seconds=seconds, microseconds=micros)),
    st.integers(-23 * 60, 23 * 60),
    st.sampled_from([0, 0, 30]),
    st.sampled_from([0, 0, 5]),
)
zones = st.none() | st.just(UTC) | offsets | st.timezones(no_cache=True)
texts = st.text(max_size=10) | st.text(st.characters(codec=None, categories=["Cs", "Cc", "Zl", "Zp", "Po"]), max_size=5)
integers = (
    st.integers()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1])
    | st.builds(pow, st.just(10), st.just(4400))  # beyond int-to-str limit: both refuse
)
scalars = (
    texts
    | integers
    | st.booleans()
    | st.none()
    | st.floats()
    | st.floats(-1e-3, 1e-3)
    | st.uuids()
    | st.datetimes(timezones=zones)
    | st.decimals()
    | st.dates()
    | st.builds(Label, st.text(max_size=3))
    | st.just(Level.LOW)
)
keys = st.text(max_size=6) | st.integers() | st.floats() | st.booleans() | st.none() | st.uuids()


def nested(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=4)
            | st.lists(children, max_size=4).map(tuple)
            | st.dictionaries(st.text(max_size=6), children, max_size=4)
            | st.dictionaries(keys, children, max_size=3)
            | st.builds(Point, st.datetimes(timezones=zones), st.uuids(), st.lists(st.text(max_size=3), max_size=2))
        ),
        max_leaves=8,
    )


values = nested(scalars)
states = st.dictionaries(st.text(max_size=12), values, max_size=5)


def outcome(transcoder: JSONTranscoder, value: Any) -> bytes | type[BaseException]:
    try:
        return transcoder.encode(value)
    except Exception as error:
        return type(error)


@settings(max_examples=400)
@given(values)
def test_any_value_is_written_as_eventsourcing_writes_it_or_both_refuse(value: Any) -> None:
    assert outcome(LEAN, value) == outcome(STANDARD, value)


@settings(max_examples=150)
@given(states)
def test_any_state_written_by_either_reads_back_equal_through_either(state: Any) -> None:
    written = outcome(STANDARD, state)
    assert outcome(LEAN, state) == written
    if isinstance(written, bytes):
        try:
            standard = STANDARD.decode(written)
        except Exception as error:  # e.g. a Decimal NaN's text or a lone surrogate never reach here; be exact anyway
            standard = type(error)
        try:
            lean = LEAN.decode(written)
        except Exception as error:
            lean = type(error)
        assert repr(lean) == repr(standard)


fast_values = st.recursive(
    st.floats()
    | integers.filter(lambda n: abs(n) < 10**4000)
    | st.uuids()
    | st.datetimes(timezones=st.none() | st.just(UTC))
    | st.decimals()
    | texts.filter(lambda t: not any("\ud800" <= c <= "\udfff" for c in t)),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=8,
)


@settings(max_examples=200)
@given(fast_values)
def test_what_the_fast_path_writes_itself_is_exact(value: Any) -> None:
    """Floats, wide ints, UUIDs, UTC and naive datetimes, Decimals: orjson writes them, no fallback."""
    assert orjson.dumps(LEAN._exact(value, 0)) == STANDARD.encode(value)  # type: ignore[attr-defined]


class FloatsByOrjson(LeanJSONTranscoder):
    """Deliberately wrong: lets orjson write floats itself (it writes 1e-05 as 0.00001)."""

    def _exact_other(self, value: Any, depth: int) -> Any:
        return value if type(value) is float else super()._exact_other(value, depth)


class EveryDatetimeByOrjson(LeanJSONTranscoder):
    """Deliberately wrong: lets orjson write datetimes of any zone (it differs on second offsets)."""

    def _exact_other(self, value: Any, depth: int) -> Any:
        if type(value) is datetime:
            return {"_type_": "datetime_iso", "_data_": value}
        return super()._exact_other(value, depth)


def test_the_comparison_catches_a_variant_that_lets_orjson_write_floats() -> None:
    wrong = transcoders(FloatsByOrjson)
    found = find(
        nested(st.floats()),
        lambda value: outcome(wrong, value) != outcome(STANDARD, value),
        settings=settings(max_examples=5000),
    )
    assert outcome(wrong, found) != outcome(STANDARD, found)


def test_the_comparison_catches_a_variant_that_lets_orjson_write_any_datetime() -> None:
    wrong = transcoders(EveryDatetimeByOrjson)
    found = find(
        st.datetimes(timezones=offsets),
        lambda value: outcome(wrong, value) != outcome(STANDARD, value),
        settings=settings(max_examples=5000),
    )
    assert isinstance(found, datetime) and found.tzinfo not in (None, UTC)


def test_the_fast_path_is_taken_for_the_ledgers_states() -> None:
    """Not vacuous: a hold's state goes through orjson, not the fallback."""
    state = {
        "timestamp": datetime(2026, 12, 7, 23, 21, 10, 511621, tzinfo=UTC),
        "request_id": UUID("e47c709f4d834c499d9493ebaa4d9b09"),
        "amount": 476000,
        "latency_ms": 8.564,
        "on": date(2026, 12, 7).isoformat(),
    }
    prepared = LEAN._exact(state, 0)  # type: ignore[attr-defined]
    assert orjson.dumps(prepared) == STANDARD.encode(state)
