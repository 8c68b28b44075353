"""Making an aggregate's event on the hot path without eventsourcing's generic machinery.

eventsourcing 9.5 makes every event through paths written for any signature: a decorated
method's call binds a descriptor object, coerces its arguments against the method's
signature, filters them against the event class's, copies them twice in ``trigger_event``,
builds the frozen dataclass with ``object.__setattr__`` per field, checks the event's id and
version against the aggregate it was just made from, then filters the event's fields against
the method's signature again to call its body (``DecoratedFuncCaller.apply``); a "created"
event goes through ``_create`` and ``mutate``'s filtering against ``__base_init__`` and
``__init__``. A billed request makes three such events in the account writer.

``trigger`` and ``create`` do the same steps, in the same order, with the same result, for
the few events made on every request:
- the event is an instance of the same class with the same ``__dict__``, key for key and in
  order (the order of the class's fields: it is the stored order), so it is stored exactly
  as before; its timestamp is ``event_class.create_timestamp()``;
- ``trigger`` applies it by calling the decorated method's body with the event's fields,
  before the aggregate takes its version and time (a body may read ``self.version``), then
  appends it to ``pending_events``; ``create`` initialises the aggregate as ``mutate`` does
  (``__base_init__``, then ``__init__`` with the event's fields) and leaves the event pending;
- a field not given takes its declared default (which is the method's: tests/unit/
  test_declared_events.py), one the class lacks or a missing one without a default is a
  ``TypeError``, as eventsourcing raises;
- what they skip does nothing for these classes, and each class is checked once, on its first
  use, so that it stays so: no explicit topics (``TOPIC``), no ``apply`` of the class's own,
  and (``create``) an ``__init__`` taking exactly the event's own fields.
Loading is unchanged: a stored event is applied by eventsourcing's ``mutate`` as before.
"""

import dataclasses
import inspect
from typing import Any, NamedTuple, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate, CanMutateAggregate, DecoratedFuncCaller, decorated_funcs
from eventsourcing.utils import get_topic

A = TypeVar("A", bound=Aggregate)
# What every event of an aggregate has, set by the aggregate (and, for a "created" event, its topic).
BASE_FIELDS = ("originator_id", "originator_version", "timestamp", "originator_topic")


class _Spec(NamedTuple):
    names: tuple[str, ...]  # the event's own fields, in their declared (stored) order
    defaults: dict[str, Any]  # field -> declared default, for those that have one
    body: Any  # trigger: the decorated method's function (create: None)
    topic: str  # create: the aggregate's topic (trigger: "")


_specs: dict[type[Any], _Spec] = {}


def trigger(aggregate: Aggregate, event_class: type[CanMutateAggregate[UUID]], **state: Any) -> None:
    """What calling ``aggregate``'s method decorated ``@event(event_class)`` with the keywords
    ``state`` does: ``event_class`` is the aggregate's class of that name (``Account.HoldPlaced``)."""
    spec = _specs.get(event_class) or _event_spec(aggregate, event_class)
    if tuple(state) != spec.names:  # every field given, in order: the hot path builds nothing more
        state = _in_order(event_class, spec, state)
    version = aggregate.version + 1
    timestamp = event_class.create_timestamp()
    event = object.__new__(event_class)
    object.__setattr__(
        event,
        "__dict__",
        {"originator_id": aggregate.id, "originator_version": version, "timestamp": timestamp, **state},
    )
    spec.body(aggregate, **state)
    aggregate.version = version
    aggregate.modified_on = timestamp
    aggregate.pending_events.append(event)


def create(
    aggregate_class: type[A], event_class: type[CanMutateAggregate[UUID]], originator_id: UUID, **state: Any
) -> A:
    """What ``aggregate_class._create(event_class, id=originator_id, **state)`` returns: the new
    aggregate, its "created" event of ``event_class`` pending."""
    if not isinstance(originator_id, UUID):
        raise TypeError(f"{event_class.__qualname__} was given a non-UUID originator_id: {originator_id!r}")
    spec = _specs.get(event_class) or _created_spec(aggregate_class, event_class)
    if tuple(state) != spec.names:
        state = _in_order(event_class, spec, state)
    version = aggregate_class.INITIAL_VERSION
    timestamp = event_class.create_timestamp()
    event = object.__new__(event_class)
    object.__setattr__(
        event,
        "__dict__",
        {
            "originator_id": originator_id,
            "originator_version": version,
            "timestamp": timestamp,
            "originator_topic": spec.topic,
            **state,
        },
    )
    aggregate = object.__new__(aggregate_class)
    aggregate.__base_init__(originator_id, version, timestamp)
    aggregate.__init__(**state)  # type: ignore[misc]  # as eventsourcing's mutate calls it
    aggregate.pending_events.append(event)
    return aggregate


def _in_order(event_class: type[Any], spec: _Spec, state: dict[str, Any]) -> dict[str, Any]:
    unknown = [name for name in state if name not in spec.names]
    if unknown:
        raise TypeError(f"{event_class.__qualname__} has no field {unknown[0]!r}")
    missing = [name for name in spec.names if name not in state and name not in spec.defaults]
    if missing:
        raise TypeError(f"{event_class.__qualname__} needs {', '.join(missing)}")
    return {name: state[name] if name in state else spec.defaults[name] for name in spec.names}


def _own_fields(event_class: type[Any]) -> tuple[tuple[str, ...], dict[str, Any]]:
    fields = [f for f in dataclasses.fields(event_class) if f.name not in BASE_FIELDS]
    names = tuple(f.name for f in fields)
    defaults = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
    if any(f.default_factory is not dataclasses.MISSING for f in fields):
        raise TypeError(f"{event_class.__qualname__}: default factories are not supported")
    return names, defaults


def _event_spec(aggregate: Aggregate, event_class: type[Any]) -> _Spec:
    body = decorated_funcs.get(event_class)
    if body is None or not _has_method(type(aggregate), body):
        raise TypeError(f"{event_class.__qualname__} is no event of an @event method of {type(aggregate).__name__}")
    if getattr(type(aggregate), "TOPIC", None) or event_class.apply is not DecoratedFuncCaller.apply:
        raise TypeError(f"{event_class.__qualname__}: explicit topics and own apply methods are not supported")
    names, defaults = _own_fields(event_class)
    _specs[event_class] = spec = _Spec(names, defaults, body, "")
    return spec


def _created_spec(aggregate_class: type[Any], event_class: type[Any]) -> _Spec:
    if (
        not issubclass(event_class, Aggregate.Created)
        or getattr(aggregate_class, event_class.__name__, None) is not event_class
    ):
        raise TypeError(f"{event_class.__qualname__} is no created event of {aggregate_class.__name__}")
    if getattr(aggregate_class, "TOPIC", None) or event_class.apply is not CanMutateAggregate.apply:
        raise TypeError(f"{event_class.__qualname__}: explicit topics and own apply methods are not supported")
    names, defaults = _own_fields(event_class)
    init = [name for name in inspect.signature(aggregate_class.__init__).parameters if name != "self"]
    if tuple(init) != names:
        raise TypeError(
            f"{aggregate_class.__name__}.__init__ does not take exactly the fields of {event_class.__name__}"
        )
    _specs[event_class] = spec = _Spec(names, defaults, None, get_topic(aggregate_class))
    return spec


def _has_method(aggregate_class: type[Any], body: Any) -> bool:
    """Whether ``body`` is the function of a method ``aggregate_class`` has, decorated ``@event``."""
    for klass in aggregate_class.__mro__:
        attr = vars(klass).get(body.__name__)
        if attr is not None:
            return getattr(attr, "decorated_func", None) is body
    return False
