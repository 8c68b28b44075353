"""Builds the read models for one database: the views, their store and their runner.

Nothing is connected or created at import; ``build_read_models`` connects (PostgreSQL:
a small pool; SQLite: the read-models file beside the event store) and
``ReadModels.create_tables()`` creates the tables — it is called by ``tallyhub init``.
Each projection declares the version of its tables (``schema_version``); creating the
tables, and the runner's first catch-up, rebuild at this code's version the tables of a
projection built at another one (projections/store.py ``SqlStore.upgrade``).

The views a ``ReadModels`` hands out answer only while their projection runs: a read of
the view of a stopped projection (runner.py) raises ``ProjectionStopped`` instead of
answering from rows that stopped at an event; the projections themselves write through
the plain views, and ``unguarded(view)`` gives one to a reader that knows the rows may be
stale (the sweeps).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from eventsourcing.application import Application

from projections.alerts import InMemoryAlertStates, SqlAlertStates
from projections.audit import AuditProjection, AuditView, InMemoryAuditView, SqlAuditView
from projections.balances import BalancesProjection, BalancesView, InMemoryBalancesView, SqlBalancesView
from projections.ledger_entries import (
    InMemoryLedgerEntriesView,
    LedgerEntriesProjection,
    LedgerEntriesView,
    SqlLedgerEntriesView,
)
from projections.memory import InMemoryStore
from projections.provider_hourly import (
    InMemoryProviderHourlyView,
    ProviderHourlyProjection,
    ProviderHourlyView,
    SqlProviderHourlyView,
    first_events_of,
)
from projections.request_log import InMemoryRequestLogView, RequestLogProjection, RequestLogView, SqlRequestLogView
from projections.runner import AnyProjection, ProjectionRunner
from projections.store import PostgresStore, Schema, SqliteStore, SqlStore
from projections.usage import InMemoryUsageView, SqlUsageView, UsageProjection, UsageView


class DatabaseConfigLike(Protocol):
    """What we use of ``adapters.settings.DatabaseConfig`` (projections never import adapters)."""

    @property
    def kind(self) -> Literal["sqlite", "postgres"]: ...

    @property
    def schema(self) -> str: ...

    @property
    def read_models_sqlite_path(self) -> Path: ...

    def conninfo(self) -> str: ...


@dataclass
class ReadModels:
    balances: BalancesView
    usage: UsageView
    requests: RequestLogView
    runner: ProjectionRunner
    store: SqlStore | InMemoryStore
    ddl: Sequence[str] = ()
    ledger: LedgerEntriesView | None = None  # None only in a bundle built by hand without it
    providers: ProviderHourlyView | None = None  # likewise
    schemas: Sequence[Schema] = ()  # the SQL views' tables at their projections' versions
    alerts: Any = None  # application/alerts.py AlertProcess, when built with ``alerts``
    audit: AuditView | None = None  # None only in a bundle built by hand without it

    def create_tables(self) -> None:
        """The store's own tables, then each projection's at its version (rebuilt if it differs)."""
        self.store.create_tables(() if self.schemas else self.ddl)
        self.store.upgrade(self.schemas)

    def close(self) -> None:
        self.runner.stop()
        self.store.close()


def build_read_models(
    database: DatabaseConfigLike | None,
    app: Application[Any],
    *,
    batch_size: int = 1000,
    alerts: Callable[[Any], AnyProjection] | None = None,
) -> ReadModels:
    """Read models in ``database`` (SQLite file or PostgreSQL schema); ``None`` keeps them in memory.
    ``alerts``: builds the alert process (application/alerts.py) on its state store, which the
    runner then runs with the projections (named ``alerts``; its tables are the store's)."""
    if database is None:
        memory = InMemoryStore()
        views: tuple[Any, ...] = (
            InMemoryBalancesView(memory),
            InMemoryUsageView(memory),
            InMemoryRequestLogView(memory),
            InMemoryLedgerEntriesView(memory),
            InMemoryProviderHourlyView(memory),
            InMemoryAuditView(memory),
        )
        return _with_alerts(_bundle(app, memory, views, (), batch_size, alerts, InMemoryAlertStates(memory)))
    store: SqlStore
    if database.kind == "postgres":
        store = PostgresStore(database.conninfo(), database.schema)
    else:
        store = SqliteStore(database.read_models_sqlite_path)
    sql_views = (
        SqlBalancesView(store),
        SqlUsageView(store),
        SqlRequestLogView(store),
        SqlLedgerEntriesView(store),
        SqlProviderHourlyView(store),
        SqlAuditView(store),
    )
    ddl = [statement for view in sql_views for statement in view.DDL]
    if alerts is not None:
        ddl += SqlAlertStates.DDL
    return _with_alerts(_bundle(app, store, sql_views, ddl, batch_size, alerts, SqlAlertStates(store)))


def _with_alerts(bundle: tuple[ReadModels, Any]) -> ReadModels:
    read_models, process = bundle
    read_models.alerts = process
    return read_models


def _bundle(
    app: Application[Any],
    store: Any,
    views: tuple[Any, ...],
    ddl: Sequence[str],
    batch_size: int,
    alerts: Callable[[Any], AnyProjection] | None = None,
    alert_states: Any = None,
) -> tuple[ReadModels, Any]:
    balances, usage, requests, ledger, providers, audit = views
    projections: tuple[AnyProjection, ...] = (
        BalancesProjection(balances),
        UsageProjection(usage),
        RequestLogProjection(requests),
        LedgerEntriesProjection(ledger),
        ProviderHourlyProjection(providers, first_events_of(app)),
        AuditProjection(audit),
    )
    process = alerts(alert_states) if alerts is not None else None
    run: list[tuple[Any, AnyProjection]] = list(zip(views, projections, strict=True))
    if process is not None:
        run.append((alert_states, process))
    schemas = [
        Schema(projection.name, getattr(projection, "schema_version", 1), tuple(view.TABLES), tuple(view.DDL))
        for view, projection in run
        if hasattr(view, "DDL")
    ]
    runner = ProjectionRunner(app, store, [projection for _, projection in run], batch_size=batch_size, schemas=schemas)
    guarded = [GuardedView(view, projection.name, runner) for view, projection in zip(views, projections, strict=True)]
    read_models = ReadModels(
        guarded[0], guarded[1], guarded[2], runner, store, tuple(ddl), guarded[3], guarded[4], tuple(schemas)
    )
    read_models.audit = guarded[5]
    return read_models, process


class GuardedView:
    """A projection's view whose every read first checks that the projection runs
    (``ProjectionStopped`` otherwise); anything else is the view's own."""

    def __init__(self, view: Any, projection: str, runner: ProjectionRunner) -> None:
        self.unguarded = view
        self._projection = projection
        self._runner = runner

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.unguarded, name)
        if name.startswith("_") or not callable(value):
            return value

        def read(*args: Any, **kwargs: Any) -> Any:
            self._runner.check_running(self._projection)
            return value(*args, **kwargs)

        return read


def unguarded(view: Any) -> Any:
    """The view itself, which answers from its rows even while its projection is stopped."""
    return view.unguarded if isinstance(view, GuardedView) else view
