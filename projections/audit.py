"""The audit log: one row per admin event — who did what to what, and when.

Invariants kept here:
- the events audited are exactly the keys of ``AUDITED`` (one line each: the event class,
  its stable dotted action name, and how to describe it); the gateway's hot path (holds,
  settlements, request records, grant expiry) is not in it, so the table grows with what
  operators do, not with traffic;
- one row per audited event, keyed by its notification ``position``; ``actor`` is what the
  event recorded (application/acting.py), ``None`` when it recorded none (events older than
  actors, or the gateway's own work, such as a credential disabled automatically);
- a summary never holds a secret: sealed secrets, secret references, digests and key
  material are never read; URLs lose their user info and query; amounts are exact credits;
- an event a describer cannot handle still gets its row, summarised generically (its field
  names only), so one odd event never stops the read model;
- rows are written once and never updated, and the names used for targets (accounts, keys,
  providers) come from earlier events of the same stream, so a rebuild gives identical rows.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.utils import get_topic

from domain.account import Account
from domain.api_key import ApiKey, shown_prefix
from domain.catalog import Catalog
from domain.deployment import Deployment
from domain.export_log import ExportLog
from domain.money import format_credits
from domain.portal import PortalAccess, PortalLink
from domain.price_book import PriceBook
from domain.provider import Provider
from domain.rate_limits import AccountRateLimits
from domain.replay_log import ReplayLog
from domain.webhook import WebhookRegistry
from projections.memory import InMemoryStore, MemoryTransaction
from projections.store import SqlStore, SqlTransaction

AUDIT_TABLE = "th_rm_audit"
NAMES_TABLE = "th_rm_audit_names"
UNRECORDED = "unrecorded"  # how a row without an actor is shown
DEFAULT_LIMIT = 200
_LOAD_CHUNK = 500


@dataclass(frozen=True)
class AuditEntry:
    position: int
    at: datetime
    actor: str | None
    action: str
    target: str
    summary: str
    aggregate_id: UUID


COLUMNS = tuple(f.name for f in fields(AuditEntry))


@dataclass(frozen=True)
class AuditFilter:
    """``action``: an exact action or its first part (``account`` matches ``account.*``);
    ``target``: a case-insensitive part of the target; ``[since, until)`` on ``at``;
    ``before``: only rows below this position (the next page of a newest-first listing)."""

    actor: str | None = None
    action: str | None = None
    target: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before: int | None = None


class Names:
    """Labels of the aggregates an event may name (account, key, provider, rate limits), read
    from earlier events: a ``lookup`` of those stored, plus the ones this batch adds."""

    def __init__(self, lookup: Callable[[Collection[str]], dict[str, str]]) -> None:
        self._lookup = lookup
        self.added: dict[str, str] = {}
        self._known: dict[str, str] = {}

    def load(self, ids: Iterable[UUID]) -> None:
        wanted = {i.hex for i in ids} - self._known.keys()
        if wanted:
            self._known.update(self._lookup(wanted))

    def add(self, aggregate_id: UUID, label: str) -> None:
        self.added[aggregate_id.hex] = self._known[aggregate_id.hex] = label

    def of(self, aggregate_id: UUID | str | None, fallback: str | None = None) -> str:
        if aggregate_id is None:
            return fallback or "—"
        key = aggregate_id.hex if isinstance(aggregate_id, UUID) else UUID(str(aggregate_id)).hex
        return self._known.get(key) or fallback or str(UUID(key))


# --- how each audited event is described ---------------------------------------------
# A describer returns (target, summary); it may also name the aggregate for later events.

Described = tuple[str, str]
Describer = Callable[[Any, Names], Described]


def credits(amount: int) -> str:
    return f"{format_credits(amount)} credits"


def when(moment: datetime | None) -> str:
    return "never" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def limit_text(value: int | None) -> str:
    return "none" if value is None else f"{value:,}"


def safe_url(url: str | None) -> str:
    """``url`` without user info, query or fragment (where a secret could hide)."""
    if not url:
        return "default"
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _joined(*parts: str | None) -> str:
    return "; ".join(p for p in parts if p)


def _account(event: Any, names: Names) -> str:
    return names.of(event.originator_id)


def _account_created(event: Any, names: Names) -> Described:
    names.add(event.originator_id, event.name)
    return event.name, f"account {event.name} created"


def _credit_granted(event: Any, names: Names) -> Described:
    expiry = f"expires {when(event.expires_at)}" if event.expires_at else None
    return _account(event, names), _joined(f"granted {credits(event.amount)}", event.reason, expiry)


def _adjusted(event: Any, names: Names) -> Described:
    short = f"asked {credits(event.requested)}" if event.requested != event.amount else None
    return _account(event, names), _joined(f"adjusted by {credits(event.amount)}", short, event.reason)


def _refunded(event: Any, names: Names) -> Described:
    text = f"refunded {credits(event.amount)} of request {event.request_id}"
    return _account(event, names), _joined(text, event.reason)


def _spend_caps(event: Any, names: Names) -> Described:
    caps = [
        f"{window} {'none' if cap is None else credits(cap)}"
        for window, cap in (("day", event.day), ("month", event.month))
    ]
    return _account(event, names), f"{event.scope} spend caps: " + ", ".join(caps)


def _alert_thresholds(event: Any, names: Names) -> Described:
    shown = ", ".join(credits(t) for t in event.thresholds) or "cleared"
    return _account(event, names), f"alert thresholds: {shown}"


def _limits(event: Any) -> str:
    return f"rpm {limit_text(event.rpm)}, tpm {limit_text(event.tpm)}, max parallel {limit_text(event.max_parallel)}"


def _key_issued(event: Any, names: Names) -> Described:
    account = names.of(event.account_id)
    target = f"{account} / key {event.originator_id}"
    names.add(event.originator_id, target)
    expiry = f"expires {when(event.expires_at)}" if event.expires_at else None
    return target, _joined(f"key {event.name!r} ({shown_prefix(event.prefix)}) issued to {account}", expiry)


def _key(event: Any, names: Names) -> str:
    return names.of(event.originator_id, f"key {event.originator_id}")


def _key_revoked(event: Any, names: Names) -> Described:
    return _key(event, names), _joined("revoked", event.reason)


def _key_rotated(event: Any, names: Names) -> Described:
    return _key(event, names), f"rotated: replaced by key {event.replaced_by}, retires {when(event.retires_at)}"


def _key_models(event: Any, names: Names) -> Described:
    models = "any model" if event.models is None else (", ".join(event.models) or "no model")
    return _key(event, names), f"allowed models: {models}"


def _key_limits(event: Any, names: Names) -> Described:
    return _key(event, names), f"rate limits: {_limits(event)}"


def _name_for_account(event: Any, names: Names) -> None:
    names.add(event.originator_id, names.of(event.account_id))


def _self_service(event: Any, names: Names) -> Described:
    return _account(event, names), f"portal self-service keys {'on' if event.keys else 'off'}"


def _portal_link_issued(event: Any, names: Names) -> Described:
    _name_for_account(event, names)
    return names.of(event.account_id), f"portal sign-in link issued, valid until {when(event.expires_at)}"


def _portal_link_redeemed(event: Any, names: Names) -> Described:
    return names.of(event.originator_id), "portal sign-in link used"


def _portal_revoked(event: Any, names: Names) -> Described:
    return names.of(event.originator_id), f"portal sessions and links revoked (generation {event.generation})"


def _account_limits(event: Any, names: Names) -> Described:
    return names.of(event.originator_id), f"account rate limits: {_limits(event)}"


def _provider_registered(event: Any, names: Names) -> Described:
    names.add(event.originator_id, event.name)
    region = f"region {event.region}" if event.region else None
    return event.name, _joined(f"{event.kind} provider registered", f"base URL {safe_url(event.base_url)}", region)


def _provider(event: Any, names: Names) -> str:
    return names.of(event.originator_id, f"provider {event.originator_id}")


def _credential(text: str) -> Describer:
    def describe(event: Any, names: Names) -> Described:
        return _provider(event, names), f"credential {event.credential_id} {text}"

    return describe


def _credential_added(event: Any, names: Names) -> Described:
    return _provider(event, names), f"credential {event.credential_id} added (weight {event.weight})"


def _credential_disabled(event: Any, names: Names) -> Described:
    how = "disabled automatically" if event.automatic else "disabled"
    return _provider(event, names), _joined(f"credential {event.credential_id} {how}", event.reason)


def _credential_rotated(event: Any, names: Names) -> Described:
    return (
        _provider(event, names),
        f"credential {event.credential_id} rotated: replaced by {event.replaced_by}, retires {when(event.retires_at)}",
    )


def _credential_weight(event: Any, names: Names) -> Described:
    return _provider(event, names), f"credential {event.credential_id} weight {event.previous} → {event.weight}"


def _provider_state(text: str) -> Describer:
    return lambda event, names: (_provider(event, names), text)


def _upstream_policy(event: Any, names: Names) -> Described:
    return _provider(event, names), (
        f"upstream policy: connect {event.timeout_connect} s, first byte {event.timeout_first_byte} s,"
        f" total {event.timeout_total} s, {event.retries} retries from {event.retry_base_ms} ms"
    )


def _alias_set(event: Any, names: Names) -> Described:
    return event.name, "alias routes to " + ", ".join(event.models)


def _alias_removed(event: Any, names: Names) -> Described:
    return event.name, "alias removed"


def _prices_published(event: Any, names: Names) -> Described:
    models = sorted(event.prices)
    listed = ", ".join(models[:5]) + (f" and {len(models) - 5} more" if len(models) > 5 else "")
    return f"price book v{event.version}", _joined(
        f"version {event.version} published with {len(models)} model(s)",
        listed,
        f"effective {when(event.effective_at)}",
    )


def _webhook_added(event: Any, names: Names) -> Described:
    return f"webhook {event.webhook_id}", f"{safe_url(event.url)} for " + (", ".join(event.events) or "no events")


def _webhook_removed(event: Any, names: Names) -> Described:
    return f"webhook {event.webhook_id}", "removed"


def _fixed(target: str, text: str) -> Describer:
    return lambda event, names: (target, text)


def _replay_applied(event: Any, names: Names) -> Described:
    total = sum(int(v) for v in event.adjustments.values())
    scope = f"account {names.of(event.account_id)}" if event.account_id else "every account"
    return (
        "replay",
        f"replay {event.replay_id} applied to {scope}: {len(event.adjustments)} adjustment(s), {credits(total)}",
    )


def _export_recorded(event: Any, names: Names) -> Described:
    entry = event.entry if isinstance(event.entry, dict) else {}
    kind, rows = entry.get("kind", "ledger"), entry.get("rows")
    return f"{kind} export", _joined(f"{kind} export recorded", f"{rows} rows" if rows is not None else None)


@dataclass(frozen=True)
class Audited:
    action: str
    describe: Describer


# The audited events: one line each. A new admin event is audited by adding its line here.
AUDITED: dict[type, Audited] = {
    Account.Created: Audited("account.created", _account_created),
    Account.CreditGranted: Audited("account.credit_granted", _credit_granted),
    Account.Adjusted: Audited("account.adjusted", _adjusted),
    Account.ChargeRefunded: Audited("account.refunded", _refunded),
    Account.SpendCapsSet: Audited("account.spend_caps_set", _spend_caps),
    Account.AlertThresholdsSet: Audited("account.alert_thresholds_set", _alert_thresholds),
    Account.SelfServiceSet: Audited("account.self_service_set", _self_service),
    AccountRateLimits.LimitsSet: Audited("account.rate_limits_set", _account_limits),
    ApiKey.Issued: Audited("key.issued", _key_issued),
    ApiKey.Revoked: Audited("key.revoked", _key_revoked),
    ApiKey.Rotated: Audited("key.rotated", _key_rotated),
    ApiKey.AllowedModelsChanged: Audited("key.models_set", _key_models),
    ApiKey.RateLimitsSet: Audited("key.rate_limits_set", _key_limits),
    Provider.Registered: Audited("provider.registered", _provider_registered),
    Provider.CredentialStored: Audited("provider.credential_added", _credential_added),
    Provider.CredentialAdded: Audited("provider.credential_added", _credential_added),
    Provider.CredentialDisabled: Audited("provider.credential_disabled", _credential_disabled),
    Provider.CredentialEnabled: Audited("provider.credential_enabled", _credential("enabled")),
    Provider.CredentialRotated: Audited("provider.credential_rotated", _credential_rotated),
    Provider.CredentialDeleted: Audited("provider.credential_deleted", _credential("deleted")),
    Provider.CredentialWeightChanged: Audited("provider.credential_weight_changed", _credential_weight),
    Provider.CredentialSecretMoved: Audited("secrets.credential_moved", _credential("moved to the secret store")),
    Provider.CredentialRewrapped: Audited("secrets.credential_rewrapped", _credential("re-encrypted")),
    Provider.Disabled: Audited("provider.disabled", _provider_state("provider disabled")),
    Provider.Enabled: Audited("provider.enabled", _provider_state("provider enabled")),
    Provider.UpstreamPolicySet: Audited("provider.policy_set", _upstream_policy),
    Catalog.AliasSet: Audited("alias.set", _alias_set),
    Catalog.AliasRemoved: Audited("alias.removed", _alias_removed),
    PriceBook.VersionPublished: Audited("prices.published", _prices_published),
    WebhookRegistry.WebhookAdded: Audited("webhook.added", _webhook_added),
    WebhookRegistry.WebhookRemoved: Audited("webhook.removed", _webhook_removed),
    Deployment.Initialised: Audited("deployment.initialised", _fixed("deployment", "store initialised")),
    Deployment.PepperRewrapped: Audited("secrets.pepper_rewrapped", _fixed("deployment", "key pepper re-encrypted")),
    Deployment.PepperMoved: Audited(
        "secrets.pepper_moved", _fixed("deployment", "key pepper moved to the secret store")
    ),
    ReplayLog.ReplayApplied: Audited("replay.applied", _replay_applied),
    ExportLog.ExportRecorded: Audited("export.recorded", _export_recorded),
    PortalLink.Issued: Audited("portal.link_issued", _portal_link_issued),
    PortalLink.Redeemed: Audited("portal.link_redeemed", _portal_link_redeemed),
    PortalAccess.SessionsRevoked: Audited("portal.sessions_revoked", _portal_revoked),
}
# Events followed only for the names later rows show (no row of their own).
NAMING: dict[type, Callable[[Any, Names], None]] = {
    AccountRateLimits.Created: _name_for_account,
    PortalAccess.Created: _name_for_account,
}
ACTIONS = tuple(sorted({audited.action for audited in AUDITED.values()}))
_BY_TOPIC = {get_topic(cls): audited for cls, audited in AUDITED.items()}
_NAMING_BY_TOPIC = {get_topic(cls): name for cls, name in NAMING.items()}


def generic(event: Any) -> Described:
    """What any event can be summarised as: its kind and its field names, no values."""
    state = [name for name in vars(event) if name not in ("originator_id", "originator_version", "timestamp", "actor")]
    return str(event.originator_id), f"{type(event).__qualname__} ({', '.join(sorted(state)) or 'no fields'})"


def action_of(event: Any) -> str:
    audited = _BY_TOPIC.get(get_topic(type(event)))
    return audited.action if audited else "event." + type(event).__qualname__.lower().replace(".", "_")


def entry_of(event: Any, position: int, names: Names) -> AuditEntry:
    """The audit row of ``event``; summarised generically if its describer cannot handle it."""
    audited = _BY_TOPIC.get(get_topic(type(event)))
    try:
        if audited is None:
            raise LookupError(type(event).__qualname__)
        target, summary = audited.describe(event, names)
    except Exception:  # an event this code cannot describe still gets its row
        target, summary = generic(event)
    return AuditEntry(
        position=position,
        at=event.timestamp.astimezone(UTC),
        actor=actor_of(event),
        action=action_of(event),
        target=target,
        summary=summary,
        aggregate_id=event.originator_id,
    )


def actor_of(event: Any) -> str | None:
    """The actor the event recorded (application/acting.py stores it in the event's state)."""
    actor = vars(event).get("actor")
    return actor if isinstance(actor, str) else None


def named_ids(event: Any) -> list[UUID]:
    """The aggregates whose labels describing ``event`` may use."""
    found = [event.originator_id]
    for attribute in ("account_id",):
        value = vars(event).get(attribute)
        if isinstance(value, UUID):
            found.append(value)
        elif isinstance(value, str) and len(value) in (32, 36):
            try:
                found.append(UUID(value))
            except ValueError:
                pass
    return found


class AuditView(Protocol):
    def list_entries(self, where: AuditFilter | None = None, limit: int = DEFAULT_LIMIT) -> list[AuditEntry]:
        """The rows matching ``where``, newest (highest position) first, at most ``limit``."""

    def list_actors(self) -> list[str | None]: ...

    def load_names(self, tx: Any, ids: Collection[str]) -> dict[str, str]: ...

    def apply(self, tx: Any, entries: list[AuditEntry], names: dict[str, str]) -> None: ...

    def clear(self, tx: Any) -> None: ...


class AuditProjection:
    name = "audit"
    schema_version = 1  # raise it when its tables or rows change: projections/store.py Schema
    topics = frozenset(_BY_TOPIC) | frozenset(_NAMING_BY_TOPIC)

    def __init__(self, view: AuditView) -> None:
        self.view = view

    def process_at(self, tx: Any, events: list[DomainEventProtocol[Any]], positions: list[int]) -> None:
        names = Names(lambda ids: self.view.load_names(tx, ids))
        names.load(i for event in events for i in named_ids(event))
        entries: list[AuditEntry] = []
        for event, position in zip(events, positions, strict=True):
            naming = _NAMING_BY_TOPIC.get(get_topic(type(event)))
            if naming is None:
                entries.append(entry_of(event, position, names))
            else:
                _name_quietly(naming, event, names)
        self.view.apply(tx, entries, names.added)

    def clear(self, tx: Any) -> None:
        self.view.clear(tx)


def _name_quietly(naming: Callable[[Any, Names], None], event: Any, names: Names) -> None:
    try:
        naming(event, names)
    except Exception:  # a label is a nicety: never a reason to stop the audit log
        return


def matches(entry: AuditEntry, where: AuditFilter) -> bool:
    target = (where.target or "").casefold()
    return (
        (where.actor is None or (entry.actor or UNRECORDED) == where.actor)
        and (where.action is None or entry.action == where.action or entry.action.startswith(where.action + "."))
        and (not target or target in entry.target.casefold())
        and (where.since is None or entry.at >= where.since)
        and (where.until is None or entry.at < where.until)
        and (where.before is None or entry.position < where.before)
    )


class InMemoryAuditView:
    TABLES: tuple[str, ...] = ()

    def __init__(self, store: InMemoryStore) -> None:
        self._lock = store.lock
        self._entries: list[AuditEntry] = []
        self._names: dict[str, str] = {}

    def list_entries(self, where: AuditFilter | None = None, limit: int = DEFAULT_LIMIT) -> list[AuditEntry]:
        with self._lock:
            entries = list(self._entries)
        where = where or AuditFilter()
        return sorted((e for e in entries if matches(e, where)), key=lambda e: -e.position)[:limit]

    def list_actors(self) -> list[str | None]:
        with self._lock:
            return sorted({e.actor for e in self._entries}, key=lambda a: (a is None, a or ""))

    def load_names(self, tx: MemoryTransaction, ids: Collection[str]) -> dict[str, str]:
        with self._lock:
            return {i: self._names[i] for i in ids if i in self._names}

    def apply(self, tx: MemoryTransaction, entries: list[AuditEntry], names: dict[str, str]) -> None:
        def commit() -> None:
            self._entries.extend(entries)
            self._names.update(names)

        tx.on_commit(commit)

    def clear(self, tx: MemoryTransaction) -> None:
        def commit() -> None:
            self._entries.clear()
            self._names.clear()

        tx.on_commit(commit)


class SqlAuditView:
    DDL = (
        f"CREATE TABLE IF NOT EXISTS {AUDIT_TABLE} ("
        " position BIGINT PRIMARY KEY, at TIMESTAMPTZ NOT NULL, actor TEXT, action TEXT NOT NULL,"
        " target TEXT NOT NULL, summary TEXT NOT NULL, aggregate_id TEXT NOT NULL)",
        f"CREATE INDEX IF NOT EXISTS {AUDIT_TABLE}_at ON {AUDIT_TABLE} (at)",
        f"CREATE INDEX IF NOT EXISTS {AUDIT_TABLE}_actor ON {AUDIT_TABLE} (actor, position)",
        f"CREATE INDEX IF NOT EXISTS {AUDIT_TABLE}_action ON {AUDIT_TABLE} (action, position)",
        f"CREATE TABLE IF NOT EXISTS {NAMES_TABLE} ( aggregate_id TEXT PRIMARY KEY, label TEXT NOT NULL)",
    )
    TABLES = (AUDIT_TABLE, NAMES_TABLE)

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    def list_entries(self, where: AuditFilter | None = None, limit: int = DEFAULT_LIMIT) -> list[AuditEntry]:
        clauses, params = self.where(where or AuditFilter())
        sql = f"SELECT {', '.join(COLUMNS)} FROM {AUDIT_TABLE}"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        rows = self.store.query(sql + " ORDER BY position DESC LIMIT ?", [*params, int(limit)])
        return [self._entry(row) for row in rows]

    def where(self, where: AuditFilter) -> tuple[list[str], list[Any]]:
        """SQL conditions and their parameters for ``where`` (the dashboard's queries reuse them)."""
        clauses: list[str] = []
        params: list[Any] = []
        if where.actor is not None:
            clauses.append("actor IS NULL" if where.actor == UNRECORDED else "actor = ?")
            params += [] if where.actor == UNRECORDED else [where.actor]
        if where.action:
            clauses.append("(action = ? OR action LIKE ? ESCAPE '!')")
            params += [where.action, _like_escaped(where.action) + ".%"]
        if where.target:
            clauses.append("LOWER(target) LIKE ? ESCAPE '!'")
            params.append("%" + _like_escaped(where.target.lower()) + "%")
        for clause, bound in (("at >= ?", where.since), ("at < ?", where.until)):
            if bound is not None:
                clauses.append(clause)
                params.append(self.store.to_db_time(bound))
        if where.before is not None:
            clauses.append("position < ?")
            params.append(int(where.before))
        return clauses, params

    def list_actors(self) -> list[str | None]:
        rows = self.store.query(f"SELECT DISTINCT actor FROM {AUDIT_TABLE}")
        return sorted((a for (a,) in rows), key=lambda a: (a is None, a or ""))

    def load_names(self, tx: SqlTransaction, ids: Collection[str]) -> dict[str, str]:
        wanted, found = sorted(ids), {}
        for start in range(0, len(wanted), _LOAD_CHUNK):
            chunk = wanted[start : start + _LOAD_CHUNK]
            marks = ", ".join("?" for _ in chunk)
            rows = tx.query(f"SELECT aggregate_id, label FROM {NAMES_TABLE} WHERE aggregate_id IN ({marks})", chunk)
            found.update({str(i): str(label) for i, label in rows})
        return found

    def apply(self, tx: SqlTransaction, entries: list[AuditEntry], names: dict[str, str]) -> None:
        tx.executemany(
            f"INSERT INTO {AUDIT_TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
            [
                (e.position, self.store.to_db_time(e.at), e.actor, e.action, e.target, e.summary, e.aggregate_id.hex)
                for e in entries
            ],
        )
        tx.executemany(
            f"INSERT INTO {NAMES_TABLE} (aggregate_id, label) VALUES (?, ?)"
            " ON CONFLICT (aggregate_id) DO UPDATE SET label = excluded.label",
            sorted(names.items()),
        )

    def clear(self, tx: SqlTransaction) -> None:
        tx.execute(f"DELETE FROM {AUDIT_TABLE}")
        tx.execute(f"DELETE FROM {NAMES_TABLE}")

    def _entry(self, row: tuple[Any, ...]) -> AuditEntry:
        position, at, actor, action, target, summary, aggregate = row
        moment = self.store.from_db_time(at)
        assert moment is not None
        return AuditEntry(int(position), moment, actor, action, target, summary, UUID(aggregate))


def _like_escaped(text: str) -> str:
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")
