"""Alerts derived from the event stream: the ``AlertProcess`` follows the ledger's events with
a tracked position (it is run by the projection runner, projections/runner.py, beside the
read models: in-process in embedded mode, by ``tallyhub worker`` in server mode) and hands
each alert to a ``NoticeOutbox`` (application/notices.py) as a ``Notice``.

What fires (docs/operations.md, "Alert events", shows each payload):
- ``balance.low``: an account's *available* balance (balance − open holds) goes from at or
  above one of its thresholds (``accounts alerts ACCOUNT --below AMOUNT``) to below it.
  That threshold is then disarmed until the available balance is back at or above it
  (hysteresis): one notice per downward crossing, thresholds independent of each other. A
  threshold set while the balance is already below it is disarmed until then too;
- ``balance.exhausted``: the available balance goes from above 0 to 0 or less; re-armed
  once it is above 0 again (a new account starts at 0: disarmed until its first credit);
- ``spend_cap.reached``: a request refused with ``spend_cap_reached`` (its failed record);
  once per account per UTC day the refused request started in (a record does not say
  which cap refused it, so a monthly cap that refuses all month notifies once a day);
- ``credential.disabled`` / ``credential.restored``: a provider credential's
  ``CredentialDisabled`` / ``CredentialEnabled`` event, one notice each;
- ``price.missing``: a request served for a model with no price (track mode records it
  with ``priced: false``; in credits mode such a request is refused before anything is
  recorded), once per model per UTC day;
- ``grant.expiring``: not an event but the clock: ``GrantExpiryCheck`` runs with the sweeps
  and notices, once per grant, each expiring grant whose deadline is within
  ``GRANT_EXPIRING_DAYS`` days.

What is followed: the crossing rule needs an account's available balance, and following it
through every hold and settlement of every account is most of what the process costs. Built
with ``account_at`` (the gateway's), the process follows only what something listens for: the
accounts that have thresholds, and every account while a webhook subscribes to
``balance.exhausted`` (the process keeps the webhooks' subscriptions from their
``WebhookRegistry`` events, in stream order). It skips the other accounts' events without
reading or writing any state. An account it starts following mid-history (thresholds set, a
webhook added) is read from the ledger as of the version before the event it resumes at; its
state is a function of that balance and its thresholds (``Watch``), so what it derives from
then on is what following it all along would have derived. Each state records the account
version it reflects: a state that missed an event (followed, skipped, followed again) is read
again the same way. Without ``account_at`` (tests of the crossing rule) every account is
followed from its first event and every notice is derived.

Invariants:
- a notice's ``event_id`` is a function of its cause (``notice_id``): the account, the
  threshold and the notification id of the event that crossed it; the credential and its
  event's notification id; the account and the day; the model and the day; the grant.
  Deriving the same stream again (a restart, a rebuild, two workers) yields the same ids,
  and the outbox ignores an id it has seen: each notice is delivered once;
- the process state (each account's available balance and which thresholds are disarmed,
  each provider's name) is written in the same transaction as the tracked position, and
  the notices are published before that transaction commits: a crash between publishes
  them again under the same ids, never loses one;
- the crossing rule is applied event by event, in notification order, so a dip and a
  recovery inside one batch still fire;
- a notice whose cause is older than ``STALE_AFTER`` when derived (a first run over a long
  history, a rebuild) updates the state but is not published: alerts are about now.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, DomainEvent, DomainEventProtocol
from eventsourcing.utils import get_topic

from application.ledger import Ledger
from application.notices import Notice, NoticeOutbox
from domain import ids
from domain.account import Account
from domain.money import format_credits
from domain.provider import Provider
from domain.request_record import RequestRecord
from domain.webhook import WebhookRegistry

log = logging.getLogger("tallyhub.alerts")

NOTICE_NAMESPACE = uuid5(ids.NAMESPACE, "notices")
STALE_AFTER = timedelta(hours=24)
GRANT_EXPIRING_DAYS = 3
SPEND_CAP_CODE = "spend_cap_reached"

# Account events that move the available balance: event class -> its change of it.
_MOVES: dict[type[Any], Callable[[Any], int]] = {
    Account.CreditGranted: lambda e: e.amount,
    Account.GrantExpired: lambda e: -e.amount,
    Account.HoldPlaced: lambda e: -e.amount,
    Account.HoldSettled: lambda e: e.held - e.amount,
    Account.HoldReleased: lambda e: e.amount,
    Account.ChargeRefunded: lambda e: e.amount,
    Account.Adjusted: lambda e: e.amount,
}
# Every event of an account, those that move nothing included: a state counts the versions it saw.
_ACCOUNT_EVENTS: tuple[type[Any], ...] = tuple(
    cls for cls in vars(Account).values() if isinstance(cls, type) and issubclass(cls, Account.Event)
)
_PROVIDER_EVENTS: tuple[type[Any], ...] = (Provider.Registered, Provider.CredentialDisabled, Provider.CredentialEnabled)
_RECORD_EVENTS: tuple[type[Any], ...] = (RequestRecord.Completed, RequestRecord.Failed)
_WEBHOOK_EVENTS: tuple[type[Any], ...] = (WebhookRegistry.WebhookAdded, WebhookRegistry.WebhookRemoved)
LISTENERS = "listeners"  # the state of the webhooks' subscriptions: {"webhooks": {id: [notice types]}}
# An account as of a version (None: the latest), read when the process starts following it.
AccountAt = Callable[[UUID, int | None], Account]


def notice_id(notice_type: str, *cause: str) -> str:
    """The id of the notice of ``notice_type`` that ``cause`` (its parts) names."""
    return "evt_" + uuid5(NOTICE_NAMESPACE, ":".join((notice_type, *cause))).hex


def credits_fields(name: str, amount: int) -> dict[str, Any]:
    """``{name: "12.5", name_nanocredits: 12500000000}``: exact decimal text and the integer."""
    return {name: format_credits(amount), f"{name}_nanocredits": amount}


# --- the crossing rule --------------------------------------------------------------


@dataclass
class Watch:
    """An account as the process follows it. ``below``: thresholds fired and not re-armed;
    ``exhausted``: ``balance.exhausted`` fired (or the account never had credit) and not re-armed.
    Both are functions of ``available`` and ``thresholds`` (``of``). ``version``: the account's
    version the state reflects (0: not known)."""

    name: str = ""
    available: int = 0
    thresholds: list[int] = field(default_factory=list)
    below: list[int] = field(default_factory=list)
    exhausted: bool = True
    version: int = 0

    @classmethod
    def of(cls, account: Account) -> Watch:
        """The state following ``account`` from its first event would have reached by its version."""
        watch = cls(account.name, account.available, exhausted=account.available <= 0, version=account.version)
        watch.set_thresholds(account.alert_thresholds)
        return watch

    def move_to(self, available: int) -> tuple[list[int], bool]:
        """The available balance is now ``available``: the thresholds it crossed downwards
        (highest first), and whether it reached 0 from above; re-arms the others."""
        crossed = [t for t in self.thresholds if available < t and t not in self.below]
        self.below = sorted({t for t in self.below if available < t} | set(crossed), reverse=True)
        exhausted_now = available <= 0 and not self.exhausted
        self.exhausted = available <= 0
        self.available = available
        return crossed, exhausted_now

    def set_thresholds(self, thresholds: Sequence[int]) -> None:
        """New thresholds; those the balance is already below start disarmed."""
        self.thresholds = sorted(set(thresholds), reverse=True)
        self.below = [t for t in self.thresholds if self.available < t]

    def plain(self) -> dict[str, Any]:
        return {
            "kind": "account",
            "name": self.name,
            "available": self.available,
            "thresholds": list(self.thresholds),
            "below": list(self.below),
            "exhausted": self.exhausted,
            "version": self.version,
        }

    @classmethod
    def from_plain(cls, value: dict[str, Any]) -> Watch:
        return cls(
            value.get("name", ""),
            int(value.get("available", 0)),
            [int(t) for t in value.get("thresholds", [])],
            [int(t) for t in value.get("below", [])],
            bool(value.get("exhausted", True)),
            int(value.get("version", 0)),
        )


# --- the process --------------------------------------------------------------------


class AlertStates(Protocol):
    """Where the process keeps its state: JSON objects by key, written in the runner's
    transaction (projections/alerts.py has the in-memory and SQL ones)."""

    TABLES: Sequence[str]

    def load(self, tx: Any, keys: Collection[str]) -> dict[str, dict[str, Any]]:
        """The state of each key that has one, read in ``tx`` (which holds the tracking lock)."""
        ...

    def save(self, tx: Any, states: dict[str, dict[str, Any]]) -> None: ...

    def clear(self, tx: Any) -> None: ...


class LoggedOutbox:
    """Until a delivering outbox is wired (application/deliveries.py): each notice is logged."""

    def publish(self, notices: Sequence[Notice]) -> None:
        for notice in notices:
            log.info("alert %s %s %s", notice.type, notice.event_id, notice.data)


class AlertProcess:
    """Run by the projection runner as a ``PositionedProjection`` named ``alerts``.
    ``account_at``: how to read an account it starts following (the module docstring, "What
    is followed"); ``account_history(ledger)`` gives one."""

    name = "alerts"
    schema_version = 2  # 2: states carry their account version; the webhooks' subscriptions
    topics = frozenset(
        get_topic(cls) for cls in (*_ACCOUNT_EVENTS, *_PROVIDER_EVENTS, *_RECORD_EVENTS, *_WEBHOOK_EVENTS)
    )

    def __init__(
        self,
        states: AlertStates,
        outbox: NoticeOutbox | None = None,
        *,
        now: Callable[[], datetime] | None = None,
        stale_after: timedelta = STALE_AFTER,
        account_at: AccountAt | None = None,
    ) -> None:
        self.view = states  # read_models.py builds a projection's schema from ``view``
        self.outbox: NoticeOutbox = outbox or LoggedOutbox()
        self.now = now or (lambda: datetime.now(UTC))
        self.stale_after = stale_after
        self.account_at = account_at

    def process_at(self, tx: Any, events: list[DomainEventProtocol[Any]], positions: list[int]) -> None:
        kinds = [_kind_of(type(event)) for event in events]
        keys = [_key_of(event, kind) for event, kind in zip(events, kinds, strict=True)]  # once an event
        wanted = set(keys)
        wanted.discard(None)
        if self.account_at is not None:
            wanted.add(LISTENERS)
        states = self.view.load(tx, cast(set[str], wanted))
        changed: set[str] = set()
        notices: list[Notice] = []
        for event, kind, key, position in zip(events, kinds, keys, positions, strict=True):
            if key is not None or kind == _WEBHOOK:  # an event that needs no state derives nothing
                notices += self._derive(event, kind, key, position, states, changed)
        if changed:
            self.view.save(tx, {key: states[key] for key in changed})
        oldest = self.now() - self.stale_after
        fresh: dict[str, Notice] = {}  # one per id: a burst of refusals in a batch is one spend_cap.reached
        for notice in notices:
            if notice.occurred_at >= oldest:
                fresh.setdefault(notice.event_id, notice)
        if fresh:
            self.outbox.publish(list(fresh.values()))  # before the commit: a crash re-derives the same ids

    def clear(self, tx: Any) -> None:
        self.view.clear(tx)

    def _derive(
        self,
        event: DomainEventProtocol[Any],
        kind: str,
        key: str | None,
        position: int,
        states: dict[str, dict[str, Any]],
        changed: set[str],
    ) -> list[Notice]:
        """What ``event`` (of ``kind``, needing the state ``key``: ``_key_of``) derives."""
        if kind == _WEBHOOK:
            _subscribe(states.setdefault(LISTENERS, {"kind": LISTENERS, "webhooks": {}}), event)
            changed.add(LISTENERS)
            return []
        if key is None:
            return []
        if kind == _ACCOUNT:
            assert isinstance(event, Aggregate.Event)
            watch = self._watch(event, states.get(key), states)
            if watch is None:
                return []  # nothing listens for this account: no state read or written
            notices = _account_notices(event, position, watch)
            states[key] = watch.plain()
            changed.add(key)
            return notices
        if isinstance(event, Provider.Registered):
            states[key] = {"kind": "provider", "name": event.name}
            changed.add(key)
            return []
        if isinstance(event, Provider.CredentialDisabled | Provider.CredentialEnabled):
            return [_credential_notice(event, position, states.get(key, {}).get("name", ""))]
        assert isinstance(event, RequestRecord.Completed | RequestRecord.Failed)
        return _record_notices(event, lambda: self._account_name(key, states))  # read only for a notice that names it

    def _watch(
        self, event: Aggregate.Event, state: dict[str, Any] | None, states: dict[str, dict[str, Any]]
    ) -> Watch | None:
        """The account's state just before ``event``, or None if nothing listens for it."""
        watch = Watch.from_plain(state) if state is not None else None
        if self.account_at is None:
            return watch or Watch()
        listened = (
            isinstance(event, Account.AlertThresholdsSet)
            or (watch is not None and bool(watch.thresholds))
            or _heard(states.get(LISTENERS), "balance.exhausted")
        )
        if not listened:
            return None
        if watch is not None and watch.version == event.originator_version - 1:
            return watch
        if event.originator_version == 1:
            return Watch()
        return Watch.of(self.account_at(event.originator_id, event.originator_version - 1))

    def _account_name(self, key: str, states: dict[str, dict[str, Any]]) -> str:
        name = states.get(key, {}).get("name")
        if name is None and self.account_at is not None and key.startswith("account:"):
            name = self.account_at(UUID(key.removeprefix("account:")), None).name  # not followed: a name never changes
        return str(name or "")


def account_history(ledger: Ledger) -> AccountAt:
    """``AlertProcess``'s ``account_at`` over ``ledger`` (from its latest snapshot at or before the version)."""

    def account_at(account_id: UUID, version: int | None) -> Account:
        account: object = ledger.repository.get(account_id, version=version)
        assert isinstance(account, Account)
        return account

    return account_at


def _subscribe(listeners: dict[str, Any], event: DomainEventProtocol[Any]) -> None:
    webhooks: dict[str, list[str]] = listeners.setdefault("webhooks", {})
    if isinstance(event, WebhookRegistry.WebhookAdded):
        webhooks[event.webhook_id] = list(event.events)
    else:
        assert isinstance(event, WebhookRegistry.WebhookRemoved)
        webhooks.pop(event.webhook_id, None)


def _heard(listeners: dict[str, Any] | None, notice_type: str) -> bool:
    """Whether a webhook subscribes to ``notice_type`` (as of the events applied so far)."""
    return listeners is not None and any(notice_type in types for types in listeners.get("webhooks", {}).values())


# What an event is to the process, by its class (``_kind_of``).
_WEBHOOK, _ACCOUNT, _PROVIDER, _RECORD, _OTHER = "webhook", "account", "provider", "record", "other"
_KINDS: dict[type[Any], str] = {}


def _kind_of(cls: type[Any]) -> str:
    """``cls``'s kind, classified once per class (by subclass, as ``isinstance`` would) and
    then read from ``_KINDS``: every event of every batch asks."""
    kind = _KINDS.get(cls)
    if kind is None:
        groups: tuple[tuple[str, tuple[type[Any], ...]], ...] = (
            (_WEBHOOK, _WEBHOOK_EVENTS),
            (_ACCOUNT, _ACCOUNT_EVENTS),
            (_PROVIDER, _PROVIDER_EVENTS),
            (_RECORD, _RECORD_EVENTS),
        )
        kind = _KINDS[cls] = next((name for name, classes in groups if issubclass(cls, classes)), _OTHER)
    return kind


def _key_of(event: DomainEventProtocol[Any], kind: str) -> str | None:
    """The state an event of ``kind`` needs: its account's or provider's (None: the event needs none)."""
    if kind == _ACCOUNT:
        return f"account:{event.originator_id.hex}"
    if kind == _PROVIDER:
        return f"provider:{event.originator_id.hex}"
    if kind == _RECORD:
        details = event.details  # type: ignore[attr-defined]  # a RequestRecord.Completed or Failed
        if _record_matters(details):
            account = details.get("account_id")
            return f"account:{UUID(account).hex}" if account else None
    return None


def _record_matters(details: dict[str, Any]) -> bool:
    if details.get("outcome") == "completed":
        return details.get("priced") is False and bool(details.get("model"))
    return details.get("error_code") == SPEND_CAP_CODE


def _at(event: DomainEventProtocol[Any]) -> datetime:
    assert isinstance(event, DomainEvent)
    return event.timestamp


def _account_notices(event: DomainEventProtocol[Any], position: int, watch: Watch) -> list[Notice]:
    assert isinstance(event, Aggregate.Event)
    watch.version = event.originator_version
    if isinstance(event, Account.Created):
        watch.name = event.name
        return []
    if isinstance(event, Account.AlertThresholdsSet):
        watch.set_thresholds(event.thresholds)
        return []
    move = _MOVES.get(type(event))
    if move is None:
        return []  # moves no credit (spend caps, self-service)
    crossed, exhausted = watch.move_to(watch.available + move(event))
    account = event.originator_id
    base: dict[str, Any] = {
        "account_id": str(account),
        "account": watch.name,
        **credits_fields("available", watch.available),
    }
    request_id = getattr(event, "request_id", None)
    if request_id is not None:
        base["request_id"] = str(request_id)
    at = _at(event)
    notices = [
        Notice(
            notice_id("balance.low", account.hex, str(threshold), str(position)),
            "balance.low",
            at,
            {**base, **credits_fields("threshold", threshold)},
        )
        for threshold in crossed
    ]
    if exhausted:
        notices.append(
            Notice(notice_id("balance.exhausted", account.hex, str(position)), "balance.exhausted", at, base)
        )
    return notices


def _credential_notice(
    event: Provider.CredentialDisabled | Provider.CredentialEnabled, position: int, name: str
) -> Notice:
    data: dict[str, Any] = {
        "provider": name,
        "provider_id": str(event.originator_id),
        "credential_id": event.credential_id,
    }
    if isinstance(event, Provider.CredentialDisabled):
        notice_type = "credential.disabled"
        data.update(reason=event.reason, automatic=event.automatic)
    else:
        notice_type = "credential.restored"
    return Notice(
        notice_id(notice_type, event.originator_id.hex, event.credential_id, str(position)),
        notice_type,
        _at(event),
        data,
    )


def _record_notices(
    event: RequestRecord.Completed | RequestRecord.Failed, account_name: Callable[[], str]
) -> list[Notice]:
    details = event.details
    if not _record_matters(details):
        return []
    at = _at(event)
    day = _day(details.get("started_at"), at)
    request = str(event.originator_id)
    if details.get("outcome") == "completed":
        model = str(details["model"])
        data = {
            "model": model,
            "requested_model": details.get("requested_model") or model,
            "provider": details.get("provider") or "",
            "day": day,
            "request_id": request,
        }
        return [Notice(notice_id("price.missing", model, day), "price.missing", at, data)]
    account = UUID(details["account_id"])
    data = {
        "account_id": str(account),
        "account": account_name(),
        "day": day,
        "request_id": request,
        "api_key_id": str(UUID(details["api_key_id"])) if details.get("api_key_id") else None,
        "requested_model": details.get("requested_model") or "",
    }
    return [Notice(notice_id("spend_cap.reached", account.hex, day), "spend_cap.reached", at, data)]


def _day(started_at: Any, at: datetime) -> str:
    """The UTC day the request started (its record's ``started_at``), else of the event."""
    if isinstance(started_at, str):
        try:
            return datetime.fromisoformat(started_at).astimezone(UTC).strftime("%Y-%m-%d")
        except ValueError:
            pass
    return at.astimezone(UTC).strftime("%Y-%m-%d")


# --- grant.expiring: a clock, not an event ------------------------------------------


class ExpiringGrantLike(Protocol):
    """What the balances read model says of an expiring grant (projections/balances.py ``ExpiringGrant``)."""

    @property
    def account_id(self) -> UUID: ...

    @property
    def grant(self) -> int: ...

    @property
    def amount(self) -> int: ...

    @property
    def expires_at(self) -> datetime: ...


class GrantExpiryCheck:
    """``grant.expiring``, once per grant: run with the sweeps (adapters/workers/hold_sweeper.py).
    ``due(t)``: the grants whose deadline is at or before ``t`` and not applied yet (the
    balances read model's ``list_due_grants``); ``name(account_id)``: the account's name."""

    def __init__(
        self,
        due: Callable[[datetime], Sequence[ExpiringGrantLike]],
        name: Callable[[UUID], str],
        outbox: NoticeOutbox,
        *,
        days: int = GRANT_EXPIRING_DAYS,
    ) -> None:
        self.due, self.name, self.outbox, self.days = due, name, outbox, days

    def run(self, now: datetime) -> int:
        """Publish a notice for each grant expiring within ``days`` of ``now``; returns how many
        were handed to the outbox (it ignores those it has seen)."""
        notices = [
            Notice(
                notice_id("grant.expiring", grant.account_id.hex, str(grant.grant)),
                "grant.expiring",
                now,
                {
                    "account_id": str(grant.account_id),
                    "account": self.name(grant.account_id),
                    "grant": grant.grant,
                    **credits_fields("amount", grant.amount),
                    "expires_at": grant.expires_at.astimezone(UTC).isoformat(),
                },
            )
            for grant in self.due(now + timedelta(days=self.days))
            if grant.expires_at > now
        ]
        if notices:
            self.outbox.publish(notices)
        return len(notices)


# --- thresholds: the commands ---------------------------------------------------------


class AlertThresholds:
    """``accounts alerts ACCOUNT [--below AMOUNT…] [--clear]`` and its admin route."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def get_thresholds(self, ref: str | UUID) -> tuple[Account, list[int]]:
        account = self.ledger.get_account(ref)
        return account, list(account.alert_thresholds)

    def set_thresholds(self, ref: str | UUID, thresholds: Sequence[int]) -> tuple[Account, list[int]]:
        """Replace the account's thresholds (``[]`` clears them); an event only on a change."""
        account_id = self.ledger.get_account(ref).id

        def change(account: Account) -> list[Aggregate] | None:
            before = account.version
            account.set_alert_thresholds(list(thresholds))
            return [] if account.version != before else None

        self.ledger.change_account(account_id, change)
        return self.get_thresholds(account_id)
