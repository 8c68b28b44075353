"""Who is acting: the actor every admin event records.

The adapter that takes a command sets the actor for the command's duration
(``acting_as``): the CLI ``cli``, the admin API and the console ``admin:<fingerprint>``
of the admin key presented, the payments webhook ``payments``, the customer portal
``portal:<api key id>`` or ``portal-link:<link id>``. The ledger stamps it on each event
the command records (``Ledger.save``, and ``Ledger.change_account`` for changes handed to
the account writer's thread), in the event's stored state under ``actor``.

Invariant: an event records an actor only when a command set one. The gateway's own
work (holds, charges, sweeps, projections) runs with none, so it costs nothing and its
events stay as they were; events stored before actors existed read ``None`` too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

CLI = "cli"
PAYMENTS = "payments"

_ACTOR: ContextVar[str | None] = ContextVar("tallyhub_actor", default=None)

A = TypeVar("A")


def current_actor() -> str | None:
    return _ACTOR.get()


@contextmanager
def acting_as(actor: str | None) -> Iterator[None]:
    """Commands run inside record ``actor`` (None: no actor, as the gateway's own work)."""
    token = _ACTOR.set(actor)
    try:
        yield
    finally:
        _ACTOR.reset(token)


def admin_actor(admin_key: str) -> str:
    """``admin:`` and the first 12 hex digits of the key's SHA-256: names the key (a rotated
    key gets another name) without revealing anything usable of it."""
    return "admin:" + hashlib.sha256(admin_key.encode()).hexdigest()[:12]


def actor_of(event: Any) -> str | None:
    """The actor an event recorded, None when it recorded none."""
    actor = vars(event).get("actor")
    return actor if isinstance(actor, str) else None


def stamp(events: Iterable[Any], actor: str) -> None:
    """Record ``actor`` in each event's state. Domain events are frozen dataclasses whose
    state is their ``__dict__`` (the mapper stores ``vars(event)``), so the actor is written
    there, before the event is stored; it is never changed afterwards."""
    for event in events:
        if "actor" not in vars(event):
            object.__setattr__(event, "actor", actor)


def stamp_pending(objs: Iterable[Any], actor: str | None) -> None:
    if actor is None:
        return
    for obj in objs:
        pending = getattr(obj, "pending_events", None)
        if pending:
            stamp(pending, actor)


def attributed(change: Callable[[A], Sequence[Any] | None]) -> Callable[[A], Sequence[Any] | None]:
    """``change`` recording the current actor on the events it makes, wherever it runs (the
    account writer runs changes on its own thread, where this command's actor is not set).
    Unchanged when no actor is set."""
    actor = current_actor()
    if actor is None:
        return change

    def change_as_actor(aggregate: A) -> Sequence[Any] | None:
        already = len(getattr(aggregate, "pending_events", ()))
        others = change(aggregate)
        stamp(getattr(aggregate, "pending_events", ())[already:], actor)
        if others:
            stamp_pending(others, actor)
        return others

    return change_as_actor
