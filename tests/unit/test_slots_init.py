"""domain/slots_init.py: the cheaper ``__init__`` builds exactly what the dataclass's own
builds (fields, defaults, ``__post_init__``, errors), and the instance stays frozen."""

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.slots_init import slots_init


@dataclasses.dataclass(frozen=True, slots=True)
class Generated:
    name: str
    count: int = 0
    tags: tuple[str, ...] = ()
    note: str | None = None

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError("count must not be negative")
        object.__setattr__(self, "tags", tuple(sorted(self.tags)))


@slots_init
@dataclasses.dataclass(frozen=True, slots=True)
class Fast:
    name: str
    count: int = 0
    tags: tuple[str, ...] = ()
    note: str | None = None

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError("count must not be negative")
        object.__setattr__(self, "tags", tuple(sorted(self.tags)))


def _fields(value: Any) -> tuple[Any, ...]:
    return tuple(getattr(value, field.name) for field in dataclasses.fields(value))


arguments = st.fixed_dictionaries(
    {"name": st.text(max_size=5)},
    optional={
        "count": st.integers(-2, 10),
        "tags": st.lists(st.sampled_from("abc"), max_size=3).map(tuple),
        "note": st.none() | st.text(max_size=3),
    },
)


@given(arguments, st.booleans())
def test_it_builds_what_the_dataclasss_own_init_builds(kwargs: dict[str, Any], positional: bool) -> None:
    args = [kwargs.pop("name")] if positional else []

    def outcome(cls: type) -> Any:
        try:
            return _fields(cls(*args, **kwargs))
        except ValueError as error:
            return str(error)

    assert outcome(Fast) == outcome(Generated)


def test_the_instance_stays_frozen_equal_hashable_and_replaceable() -> None:
    fast = Fast("a", 2, ("b", "a"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.count = 3  # type: ignore[misc]
    assert fast == Fast(name="a", count=2, tags=("a", "b")) and hash(fast) == hash(Fast("a", 2, ("a", "b")))
    assert dataclasses.replace(fast, count=5) == Fast("a", 5, ("a", "b"))
    with pytest.raises(ValueError, match="negative"):
        dataclasses.replace(fast, count=-1)


def test_wrong_arguments_are_refused_as_the_dataclass_refuses_them() -> None:
    for call in (lambda cls: cls(), lambda cls: cls("a", nothing=1), lambda cls: cls("a", 1, (), None, "extra")):
        with pytest.raises(TypeError):
            call(Generated)
        with pytest.raises(TypeError):
            call(Fast)


def test_a_class_it_cannot_speed_up_is_refused_at_once() -> None:
    with pytest.raises(TypeError, match="no slot"):

        @slots_init
        @dataclasses.dataclass(frozen=True)
        class NoSlots:
            name: str

    with pytest.raises(TypeError, match="plain defaults"):

        @slots_init
        @dataclasses.dataclass(frozen=True, slots=True)
        class Factory:
            tags: list[str] = dataclasses.field(default_factory=list)

    with pytest.raises(TypeError, match="not a frozen dataclass"):

        @slots_init
        @dataclasses.dataclass(slots=True)
        class Mutable:
            name: str
