"""The ``Account`` events the read side follows, named where a type checker can see them.

domain/account.py declares its events by decorating methods (``@event("CreditGranted")``):
eventsourcing creates ``Account.CreditGranted`` when the class body runs, so mypy cannot
see the attribute. Each is looked up here once, at import (a missing one fails there),
as ``type[Any]``: an ``isinstance`` check against it makes the event ``Any``, and its
payload is read by the names of the decorated method's parameters. Should the domain
declare its event classes explicitly, import them from there instead.
"""

from typing import Any

from domain.account import Account


def _event_class(name: str) -> type[Any]:
    cls = getattr(Account, name)
    if not (isinstance(cls, type) and issubclass(cls, Account.Event)):
        raise TypeError(f"Account.{name} is not an event class")
    return cls


CreditGranted = _event_class("CreditGranted")
GrantExpired = _event_class("GrantExpired")
Adjusted = _event_class("Adjusted")
ChargeRefunded = _event_class("ChargeRefunded")
HoldPlaced = _event_class("HoldPlaced")
HoldSettled = _event_class("HoldSettled")
HoldReleased = _event_class("HoldReleased")
