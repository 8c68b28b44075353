"""The events this process has just committed, by notification id, for its projection runner.

A projection runner reads back from the store what this same process wrote a moment ago and
decodes each event's JSON state into the domain event it already had: about 69,000
instructions an event (a billed request commits three). The process's ``save`` returns
each event it recorded with its notification id (eventsourcing's ``Recording``); kept here,
the runner takes the event object instead of decoding it (projections/runner.py
``_SharedReads``). The notifications themselves are still read from the store — other
processes write to it too, and ids can have gaps — so which events a projection sees, and
in which order, is the store's alone; only the decoding is spared.

Invariants kept here:
- an event is kept under notification id ``n`` only once a save has returned it with ``n``:
  ``Recording``s exist only for a committed insert (SQLite and PostgreSQL return the ids
  after the commit), so nothing of a failed or rolled-back save is ever kept;
- an event is handed out for a notification only if its originator id and version are the
  notification's (a store replaced under a running process, say, falls back to decoding);
- at most ``capacity`` events are kept, the oldest forgotten first;
- the events handed out are the very objects that were saved, shared by every projection
  (as a decoded event is within one catch-up pass). So only the classes in ``KEPT`` are
  kept: the events every billed request saves, whose aggregates copy what they keep of
  them (a hold, a lot) or never change it (a record's details), so nothing mutates one
  after its save; tests/property/test_recent_events_rules.py checks that each is equal,
  type for type down to its nested values, to the event decoded from its stored state.
  Any other event (an admin command's: a price book's, a key's) is decoded as before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Notification, Recording

from domain.account import Account
from domain.request_record import RequestRecord

log = logging.getLogger("tallyhub.projections")
CAPACITY = 5_000  # events kept; a catch-up pass reads at most a batch (1,000) past its position
KEPT: frozenset[type[Any]] = frozenset(
    {
        Account.Created,
        Account.CreditGranted,
        Account.HoldPlaced,
        Account.HoldSettled,
        Account.HoldReleased,
        RequestRecord.Completed,
        RequestRecord.Failed,
    }
)


class RecentEvents:
    """Events committed by this process, by notification id; thread-safe (savers add,
    the projection thread reads)."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._events: dict[int, DomainEventProtocol[Any]] = {}
        self._capacity = capacity
        self._adding = threading.Lock()  # only adders mutate the map; a reader's get is atomic

    def __len__(self) -> int:
        return len(self._events)

    def committed(self, recordings: Iterable[Recording[Any]]) -> None:
        """Keep the events (of the ``KEPT`` classes) of a save that has returned (committed)."""
        with self._adding:
            events = self._events
            for recording in recordings:
                if type(recording.domain_event) in KEPT:
                    events[recording.notification.id] = recording.domain_event
            excess = len(events) - self._capacity
            if excess > 0:
                for notification_id in list(islice(events, excess)):
                    del events[notification_id]

    def event(self, notification: Notification) -> DomainEventProtocol[Any] | None:
        """The committed event stored as ``notification``, or None (then decode it)."""
        event = self._events.get(notification.id)
        if (
            event is None
            or event.originator_version != notification.originator_version
            or event.originator_id != notification.originator_id
        ):
            return None
        return event

    def keep(self, recordings: Sequence[Recording[Any]]) -> None:
        """``committed``, as a durable save's listener (application/ledger.py ``on_recorded``):
        a failure here must not turn the save into an error (the runner then decodes those
        events from the store, as it would have anyway)."""
        if not recordings:
            return
        try:
            self.committed(recordings)
        except Exception:  # noqa: BLE001 - logged; the save is durable all the same
            log.exception("could not keep the events of a save for the projections")
