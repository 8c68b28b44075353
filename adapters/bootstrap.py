"""The one place where Tallyhub is wired together from Settings."""

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from adapters.crypto.aes_gcm import AesGcmKeyVault
from adapters.crypto.key_digest import HmacApiKeyScheme
from adapters.crypto.key_ring import KeyRing
from adapters.crypto.master_key import ensure_master_key_file, load_key_ring
from adapters.files import PRIVATE_FILE, private_dir, private_sqlite, tighten
from adapters.services import Services
from adapters.settings import Settings, SettingsError
from application.alerts import AlertProcess, account_history
from application.billing import RequestBilling
from application.health import CredentialHealth
from application.key_management import check_key_ring, move_secrets_out_of_history
from application.ledger import Ledger
from application.ports import Clock, RateLimiter, RequestObserver
from application.rate_limits import InProcessRateLimiter
from application.routing import Router

# eventsourcing's in-memory ("plain old Python objects") store: events, snapshots and (beside
# them, adapters/persistence/secret_store.py) the secret store live in this process only.
IN_MEMORY_STORE = {
    "PERSISTENCE_MODULE": "eventsourcing.popo",
    "TRANSCODER_TOPIC": "adapters.persistence.lean_transcoder:LeanJSONTranscoder",
}


def build_ledger(
    settings: Settings,
    *,
    create_tables: bool = False,
    clock: Clock | None = None,
    read_cache_seconds: float = 0.0,
    on_commit: Callable[[], None] | None = None,
) -> Ledger:
    """The Ledger on the settings' database, sealing with the settings' master keys."""
    secure_files(settings)
    vault = AesGcmKeyVault(load_key_ring(settings))
    env = settings.database.eventsourcing_env(create_tables=create_tables)
    return Ledger(
        env,
        vault=vault,
        key_scheme_factory=HmacApiKeyScheme,
        clock=clock,
        read_cache_seconds=read_cache_seconds,
        on_commit=on_commit,
    )


def in_memory_ledger(
    *, master_key: bytes | KeyRing | None = None, clock: Clock | None = None, read_cache_seconds: float = 0.0
) -> Ledger:
    """A Ledger on the in-memory store (IN_MEMORY_STORE), not yet initialised (call
    ``initialise()`` for the admin key): for tests and tools that need no database.
    ``master_key``: a 32-byte key or a key ring; a random key when None."""
    return Ledger(
        IN_MEMORY_STORE,
        vault=AesGcmKeyVault(master_key if master_key is not None else os.urandom(32)),
        key_scheme_factory=HmacApiKeyScheme,
        clock=clock,
        read_cache_seconds=read_cache_seconds,
    )


def secure_files(settings: Settings) -> None:
    """The data dir 0700 (created for SQLite, tightened when it exists), the SQLite
    databases 0600 before SQLite opens them, recorded exports 0600 (adapters/files.py)."""
    database = settings.database
    if database.kind == "sqlite" or settings.data_dir.is_dir():
        private_dir(settings.data_dir)
    if database.kind == "sqlite" and database.sqlite_path is not None and database.sqlite_path.name != ":memory:":
        private_sqlite(database.sqlite_path)
        private_sqlite(database.read_models_sqlite_path)
    exports = settings.data_dir / "exports"
    if exports.is_dir():
        private_dir(exports)
        for path in exports.iterdir():
            if path.is_file():
                tighten(path, PRIVATE_FILE)


def build_read_models(settings: Settings | None, ledger: Ledger) -> Any:
    """The read models in the settings' database, or in memory when ``settings`` is None, with
    the alert process (application/alerts.py) run beside them; its outbox is wired by ``_wire``."""
    from projections.read_models import build_read_models as build

    return build(
        settings.database if settings is not None else None,
        ledger,
        alerts=lambda states: AlertProcess(states, now=ledger.clock.now, account_at=account_history(ledger)),
    )


def build_services(
    settings: Settings,
    *,
    clock: Clock | None = None,
    ledger: Ledger | None = None,
    read_models: Any = None,
    health: CredentialHealth | None = None,
) -> Services:
    """Everything the gateway and the CLI use. ``ledger``: an initialised Ledger to use
    instead of one on the settings' database (tests pass an initialised
    ``in_memory_ledger()``; its clock and read cache are then the caller's), with
    ``read_models`` (built on it) or else read models in memory. ``health``: the
    credential health to route by (tests give one a clock); a fresh one when None."""
    if ledger is not None and settings.server_mode:
        raise SettingsError("an in-process ledger cannot serve in server mode (TALLYHUB_REDIS_URL)")
    in_settings_database = ledger is None
    wake = build_commit_publisher(settings) if settings.server_mode else None
    try:
        if ledger is None:
            ledger = build_ledger(
                settings,
                clock=clock,
                read_cache_seconds=settings.read_cache_seconds,
                on_commit=wake.notify if wake is not None else None,
            )
        ledger.load_deployment()
        move_secrets_out_of_history(ledger)  # a store made before the secret store is upgraded in place
        check_key_ring(ledger)  # every sealed secret opens with the configured keys, or fail now
        if read_models is None:
            read_models = build_read_models(settings if in_settings_database else None, ledger)
        return _wire(settings, ledger, read_models, wake, health or CredentialHealth())
    except BaseException:
        if wake is not None:
            wake.close()
        raise


def _status_of(error: Exception) -> int:
    """adapters/http/errors.py ``status_of``, the one mapping of errors to statuses, imported
    at its first use: only a serving process (FastAPI loaded already) records a failed
    request, and the CLI, which builds the same services, does not load FastAPI."""
    from adapters.http.errors import status_of

    return status_of(error)


def _wire(settings: Settings, ledger: Ledger, read_models: Any, wake: Any, health: CredentialHealth) -> Services:
    router = Router(ledger, health, default_total_seconds=settings.upstream_timeout_seconds)
    metrics, access_log, observer = build_observers(settings)
    billing = RequestBilling(
        ledger,
        router,
        mode=settings.billing_mode,
        hold_ttl=timedelta(seconds=settings.hold_ttl_seconds),
        status_of=_status_of,  # the statuses the API answers errors with, recorded as the request's
        early_upstream=settings.early_upstream,
        observer=observer,  # told of each request once its record is saved
    )
    services = Services(
        settings=settings,
        ledger=ledger,
        billing=billing,
        router=router,
        read_models=read_models,
        wake=wake,
        health_sync=build_health_sync(settings, health) if settings.server_mode else None,
        rate_limiter=build_rate_limiter(settings),
        metrics=metrics,
        access_log=access_log,
    )
    metrics.watch(services)  # the gauges read at scrape: credentials, holds, projections
    if not settings.server_mode:  # this process projects what it saves (server mode: the worker does)
        _project_from_memory(ledger, read_models)
    alerts = getattr(read_models, "alerts", None)
    if alerts is not None:  # the alert process hands its notices to the webhook deliveries
        alerts.outbox = services.deliveries
    return services


def _project_from_memory(ledger: Ledger, read_models: Any) -> None:
    """This process's projection runner takes the events this process saves from memory
    instead of decoding them back from the store (projections/recent_events.py): every
    save of the ledger (the group-commit writer's too) hands its recordings over once it
    has returned."""
    from projections.recent_events import RecentEvents

    runner = getattr(read_models, "runner", None)
    if runner is None or runner.recent is not None:
        return
    runner.recent = RecentEvents()
    ledger.on_recorded = runner.recent.keep


def build_observers(settings: Settings) -> tuple[Any, Any, RequestObserver]:
    """The metrics, the access log (None when ``TALLYHUB_ACCESS_LOG=off``; adapters/access_log.py),
    and what billing tells of each recorded request: both."""
    from adapters.access_log import JsonAccessLog, access_logger
    from adapters.metrics import GatewayMetrics
    from adapters.observers import FanOutObserver

    metrics = GatewayMetrics()
    observers: list[RequestObserver] = [metrics]
    access_log = JsonAccessLog(access_logger()) if settings.access_log == "json" else None
    if access_log is not None:
        observers.append(access_log)
    return metrics, access_log, FanOutObserver(observers)


def build_rate_limiter(settings: Settings) -> RateLimiter:
    """The rate limiter requests are admitted by (application/ports.py ``RateLimiter``), parallel
    slots kept at most the hold TTL: server mode shares the windows of every ``serve`` through
    Redis (adapters/rate_limits_redis.py; limits fail open while Redis is unreachable),
    embedded mode keeps them in this process's memory."""
    if settings.server_mode:
        from adapters.rate_limits_redis import RedisRateLimiter

        assert settings.redis_url is not None
        return RedisRateLimiter(settings.redis_url, settings.redis_prefix, hold_ttl_seconds=settings.hold_ttl_seconds)
    return InProcessRateLimiter(lease_seconds=settings.hold_ttl_seconds)


def build_commit_publisher(settings: Settings) -> Any:
    """Server mode: each commit of this process wakes the workers (adapters/workers/wake.py)."""
    from adapters.workers.wake import RedisCommitPublisher, wake_channel

    assert settings.redis_url is not None
    try:
        publisher = RedisCommitPublisher(settings.redis_url, wake_channel(settings.redis_prefix))
    except ValueError as exc:  # redis-py's word for a URL it cannot use
        raise SettingsError(f"TALLYHUB_REDIS_URL: {exc}") from None
    return publisher.start()


def build_health_sync(settings: Settings, health: CredentialHealth) -> Any:
    """Server mode: credential health shared with the other ``serve`` processes through
    Redis (adapters/health_redis.py); its threads are started by the server's lifespan."""
    from adapters.health_redis import RedisHealthSync

    assert settings.redis_url is not None
    return RedisHealthSync(settings.redis_url, settings.redis_prefix, health)


@dataclass(frozen=True)
class Initialised:
    admin_key: str | None  # None when the store was initialised before
    master_key_created: bool


def initialise(settings: Settings) -> Initialised:
    """Create the master key (unless given), the tables and the deployment. Safe to re-run."""
    private_dir(settings.data_dir)
    created = ensure_master_key_file(settings)
    ledger = build_ledger(settings, create_tables=True)
    try:
        read_models = build_read_models(settings, ledger)
        read_models.create_tables()
        ledger.secret_store.create_table()
        if settings.responses_store:  # else made by the first response stored, if storage is turned on later
            from adapters.persistence.response_store import response_rows_for

            response_rows_for(ledger.recorder).create_table()
        from adapters.persistence.delivery_store import delivery_rows_for

        delivery_rows_for(ledger.recorder).create_table()  # webhook deliveries (application/deliveries.py)
        from adapters.persistence.job_store import job_rows_for

        job_rows_for(ledger.recorder).create_table()  # background exports and replays (application/jobs.py)
        if ledger.is_initialised():
            ledger.load_deployment()  # proves the master key opens the existing store
            move_secrets_out_of_history(ledger)  # and upgrades one made before the secret store
            return Initialised(admin_key=None, master_key_created=created)
        return Initialised(admin_key=ledger.initialise(), master_key_created=created)
    finally:
        ledger.close()
