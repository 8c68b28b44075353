"""All configuration, read once from ``TALLYHUB_*`` environment variables.

Every variable, its default and its meaning is listed in the README; nothing else
in Tallyhub reads the environment.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

BillingMode = Literal["track", "credits"]
AccessLog = Literal["json", "off"]


class SettingsError(ValueError):
    """A configuration value that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class DatabaseConfig:
    """Where the event store and the read models live."""

    kind: Literal["sqlite", "postgres"]
    sqlite_path: Path | None = None
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    password: str = ""
    dbname: str = "postgres"
    schema: str = "public"
    store_timeout_seconds: int = 5  # PostgreSQL: a store call's wait for a connection, its retries included

    @property
    def read_models_sqlite_path(self) -> Path:
        assert self.sqlite_path is not None
        return self.sqlite_path.with_name(self.sqlite_path.stem + "-read-models.sqlite")

    def conninfo(self) -> str:
        """A libpq connection string for psycopg (read models, advisory locks)."""
        parts = [f"host={self.host}", f"port={self.port}", f"user={self.user}", f"dbname={self.dbname}"]
        if self.password:
            parts.append(f"password={self.password}")
        return " ".join(parts)

    def eventsourcing_env(self, *, create_tables: bool) -> dict[str, str]:
        env = {
            "CREATE_TABLE": "y" if create_tables else "n",
            "AGGREGATE_CACHE_MAXSIZE": "10000",
            "TRANSCODER_TOPIC": "adapters.persistence.lean_transcoder:LeanJSONTranscoder",  # the same bytes, on orjson
        }
        if self.kind == "sqlite":
            assert self.sqlite_path is not None
            env.update(
                PERSISTENCE_MODULE="adapters.persistence.sqlite_factory:StatementCachingSQLiteFactory",
                APPLICATION_RECORDER_TOPIC="adapters.persistence.sqlite_recorder:BatchedSQLiteApplicationRecorder",
                SQLITE_DBNAME=str(self.sqlite_path),
                SQLITE_LOCK_TIMEOUT="30",
            )
        else:
            env.update(
                PERSISTENCE_MODULE="eventsourcing.postgres",
                APPLICATION_RECORDER_TOPIC="adapters.persistence.postgres_recorder:BatchedPostgresApplicationRecorder",
                POSTGRES_HOST=self.host,
                POSTGRES_PORT=str(self.port),
                POSTGRES_USER=self.user,
                POSTGRES_PASSWORD=self.password,
                POSTGRES_DBNAME=self.dbname,
                POSTGRES_SCHEMA=self.schema,
                POSTGRES_POOL_SIZE="8",
                POSTGRES_MAX_OVERFLOW="8",
                POSTGRES_CONNECT_TIMEOUT=str(self.store_timeout_seconds),  # the pool's wait (postgres_recorder.py)
            )
        return env


def parse_database_url(url: str | None, data_dir: Path) -> DatabaseConfig:
    """``None`` → SQLite file in the data dir; ``sqlite:///path``; ``postgresql://user:pw@host:port/db?schema=s``."""
    if not url:
        return DatabaseConfig(kind="sqlite", sqlite_path=data_dir / "tallyhub.sqlite")
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = unquote(parts.path)
        if parts.netloc or not path or path == "/":
            raise SettingsError("TALLYHUB_DATABASE_URL: expected sqlite:///relative/path or sqlite:////absolute/path")
        return DatabaseConfig(kind="sqlite", sqlite_path=Path(path[1:]))
    if parts.scheme in ("postgresql", "postgres"):
        query = parse_qs(parts.query)
        schema = query.get("schema", ["public"])[0]
        if not schema.replace("_", "").isalnum():
            raise SettingsError("TALLYHUB_DATABASE_URL: schema must be letters, digits and underscores")
        try:
            port = parts.port or 5432
        except ValueError:
            raise SettingsError("TALLYHUB_DATABASE_URL: the port is not a number") from None
        return DatabaseConfig(
            kind="postgres",
            host=parts.hostname or "127.0.0.1",
            port=port,
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password or ""),
            dbname=(parts.path or "/postgres")[1:] or "postgres",
            schema=schema,
        )
    raise SettingsError(f"TALLYHUB_DATABASE_URL: unsupported scheme {parts.scheme!r} (use sqlite:// or postgresql://)")


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./data")
    database_url: str | None = None
    redis_url: str | None = None
    redis_prefix: str = "tallyhub"  # Redis channel/key prefix: deployments sharing a Redis never meet
    master_key: str | None = field(default=None, repr=False)
    master_keys: str | None = field(default=None, repr=False)  # "kid:key,kid:key", newest first
    master_keys_file: Path | None = None  # one "kid:key" per line, newest first
    admin_key: str | None = field(default=None, repr=False)
    billing_mode: BillingMode = "credits"
    hold_ttl_seconds: int = 900
    upstream_timeout_seconds: float = 300.0
    max_body_bytes: int = 10 * 1024 * 1024
    admin_max_body_bytes: int = 1024 * 1024  # /admin/v1 bodies (price files, replays); checked after the admin key
    auth_failure_limit: int = 20  # failed authentications per address per minute before 429; 0: no throttle
    probe_interval_seconds: int = 60
    sweep_interval_seconds: int = 30
    ready_max_lag_events: int = 10_000  # GET /ready: 503 when a read model is further behind the event store
    payments_webhook_secret: str | None = field(default=None, repr=False)
    payments_tolerance_seconds: int = 300
    starter_credits: str = "0"
    read_cache_seconds: float = 1.0
    early_upstream: bool = True  # a hold the hold gate admits calls upstream while it is saved
    log_level: str = "info"
    access_log: AccessLog = "json"  # one JSON line per recorded request on stderr (adapters/access_log.py)
    metrics_token: str | None = field(default=None, repr=False)  # bearer token for GET /metrics; None: open
    responses_store: bool = False  # TALLYHUB_RESPONSES_STORE=on: /v1/responses kept encrypted (stored_responses.py)
    responses_retention_days: int = 30  # how long a stored response is kept, then purged
    shutdown_grace_seconds: float = 30.0  # SIGTERM: how long requests in flight may finish (application/shutdown.py)
    webhook_timeout_seconds: int = 10  # one webhook delivery attempt (application/deliveries.py)
    webhook_max_attempts: int = 15  # then the delivery is `failed`
    webhook_retry_seconds: int = 1  # the first retry's delay; each next one doubles, up to an hour
    store_timeout_seconds: int = 5  # PostgreSQL unreachable: a request's store call gives up (503) after this
    dashboard_url: str = "http://127.0.0.1:8501"  # where `tallyhub portal link` points: DASHBOARD_URL/portal?token=…
    portal_session_ttl_seconds: int = 8 * 3600  # a customer portal session's lifetime
    topup_url: str | None = None  # a template with {account} (the account's id): the link in every 402

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        mode = env.get("TALLYHUB_BILLING_MODE", "credits")
        if mode not in ("track", "credits"):
            raise SettingsError(f"TALLYHUB_BILLING_MODE must be 'track' or 'credits', not {mode!r}")
        return cls(
            data_dir=Path(env.get("TALLYHUB_DATA_DIR", "./data")),
            database_url=env.get("TALLYHUB_DATABASE_URL") or None,
            redis_url=env.get("TALLYHUB_REDIS_URL") or None,
            redis_prefix=_redis_prefix(env),
            master_key=env.get("TALLYHUB_MASTER_KEY") or None,
            master_keys=env.get("TALLYHUB_MASTER_KEYS") or None,
            master_keys_file=Path(env["TALLYHUB_MASTER_KEYS_FILE"]) if env.get("TALLYHUB_MASTER_KEYS_FILE") else None,
            admin_key=_admin_key(env),
            billing_mode=mode,  # type: ignore[arg-type]
            hold_ttl_seconds=_positive_int(env, "TALLYHUB_HOLD_TTL_SECONDS", 900),
            upstream_timeout_seconds=float(_positive_int(env, "TALLYHUB_UPSTREAM_TIMEOUT_SECONDS", 300)),
            max_body_bytes=_positive_int(env, "TALLYHUB_MAX_BODY_BYTES", 10 * 1024 * 1024),
            admin_max_body_bytes=_positive_int(env, "TALLYHUB_ADMIN_MAX_BODY_BYTES", 1024 * 1024),
            auth_failure_limit=_whole_number(env, "TALLYHUB_AUTH_FAILURE_LIMIT", 20),
            probe_interval_seconds=_positive_int(env, "TALLYHUB_PROBE_INTERVAL_SECONDS", 60),
            sweep_interval_seconds=_positive_int(env, "TALLYHUB_SWEEP_INTERVAL_SECONDS", 30),
            ready_max_lag_events=_positive_int(env, "TALLYHUB_READY_MAX_LAG_EVENTS", 10_000),
            payments_webhook_secret=env.get("TALLYHUB_PAYMENTS_WEBHOOK_SECRET") or None,
            payments_tolerance_seconds=_positive_int(env, "TALLYHUB_PAYMENTS_TOLERANCE_SECONDS", 300),
            starter_credits=env.get("TALLYHUB_STARTER_CREDITS", "0"),
            read_cache_seconds=_seconds(env, "TALLYHUB_READ_CACHE_SECONDS", 1.0),
            early_upstream=_switch(env, "TALLYHUB_EARLY_UPSTREAM", True),
            log_level=env.get("TALLYHUB_LOG_LEVEL", "info"),
            access_log=_access_log(env),
            metrics_token=_metrics_token(env),
            responses_store=_on_off(env, "TALLYHUB_RESPONSES_STORE", False),
            responses_retention_days=_positive_int(env, "TALLYHUB_RESPONSES_RETENTION_DAYS", 30),
            shutdown_grace_seconds=_grace_seconds(env),
            webhook_timeout_seconds=_positive_int(env, "TALLYHUB_WEBHOOK_TIMEOUT_SECONDS", 10),
            webhook_max_attempts=_positive_int(env, "TALLYHUB_WEBHOOK_MAX_ATTEMPTS", 15),
            webhook_retry_seconds=_positive_int(env, "TALLYHUB_WEBHOOK_RETRY_SECONDS", 1),
            store_timeout_seconds=_store_timeout(env),
            dashboard_url=_http_url(env, "TALLYHUB_DASHBOARD_URL") or "http://127.0.0.1:8501",
            portal_session_ttl_seconds=_positive_int(env, "TALLYHUB_PORTAL_SESSION_TTL_SECONDS", 8 * 3600),
            topup_url=_topup_url(env),
        )

    @property
    def database(self) -> DatabaseConfig:
        config = parse_database_url(self.database_url, self.data_dir)
        return replace(config, store_timeout_seconds=self.store_timeout_seconds)

    @property
    def server_mode(self) -> bool:
        """PostgreSQL and Redis: projections and sweeps run in ``tallyhub worker``, not in ``serve``."""
        return self.redis_url is not None and self.database.kind == "postgres"

    @property
    def master_key_path(self) -> Path:
        return self.data_dir / "master.key"


MIN_ADMIN_KEY_LENGTH = 32  # `tallyhub init` prints "tha_" + 43 random URL-safe characters


def _admin_key(env: Mapping[str, str]) -> str | None:
    key = env.get("TALLYHUB_ADMIN_KEY") or None
    if key is not None and len(key) < MIN_ADMIN_KEY_LENGTH:
        raise SettingsError(
            f"TALLYHUB_ADMIN_KEY must be at least {MIN_ADMIN_KEY_LENGTH} characters "
            f"(this one has {len(key)}); e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return key


def _access_log(env: Mapping[str, str]) -> AccessLog:
    raw = (env.get("TALLYHUB_ACCESS_LOG") or "json").strip().lower()
    if raw == "json":
        return "json"
    if raw == "off":
        return "off"
    raise SettingsError(f"TALLYHUB_ACCESS_LOG must be 'json' or 'off', not {env.get('TALLYHUB_ACCESS_LOG')!r}")


MIN_METRICS_TOKEN_LENGTH = 16


def _metrics_token(env: Mapping[str, str]) -> str | None:
    token = env.get("TALLYHUB_METRICS_TOKEN") or None
    if token is not None and (len(token) < MIN_METRICS_TOKEN_LENGTH or not token.isprintable() or " " in token):
        raise SettingsError(
            f"TALLYHUB_METRICS_TOKEN must be at least {MIN_METRICS_TOKEN_LENGTH} printable characters without spaces"
        )
    return token


def _http_url(env: Mapping[str, str], name: str) -> str | None:
    """An ``http(s)://host[:port][/path]`` URL without a query, its trailing ``/`` dropped; None when unset."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise SettingsError(f"{name} must be an http:// or https:// URL without a query, not {raw!r}")
    return raw.rstrip("/")


def _topup_url(env: Mapping[str, str]) -> str | None:
    """TALLYHUB_TOPUP_URL: an http(s) URL template with ``{account}``, e.g. ``https://pay.example/top-up?account={account}``."""
    name = "TALLYHUB_TOPUP_URL"
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    parts = urlsplit(raw.replace("{account}", "x"))
    if "{account}" not in raw or parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(f"{name} must be an http:// or https:// URL containing {{account}}, not {raw!r}")
    if raw.replace("{account}", "").count("{") or raw.replace("{account}", "").count("}"):
        raise SettingsError(f"{name} may contain no braces other than {{account}}")
    return raw


def _redis_prefix(env: Mapping[str, str]) -> str:
    prefix = env.get("TALLYHUB_REDIS_PREFIX") or "tallyhub"
    if not prefix.replace("_", "").replace("-", "").replace(":", "").replace(".", "").isalnum():
        raise SettingsError("TALLYHUB_REDIS_PREFIX must be letters, digits and _ - : .")
    return prefix


def _on_off(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value in ("on", "off"):
        return value == "on"
    raise SettingsError(f"{name} must be 'on' or 'off', not {raw!r}")


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value in ("1", "on", "true", "yes"):
        return True
    if value in ("0", "off", "false", "no"):
        return False
    raise SettingsError(f"{name} must be 1 or 0 (on or off), not {raw!r}")


MAX_SHUTDOWN_GRACE_SECONDS = 3600


def _grace_seconds(env: Mapping[str, str]) -> float:
    name = "TALLYHUB_SHUTDOWN_GRACE_SECONDS"
    raw = (env.get(name) or "").strip()
    if not raw:
        return 30.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_SHUTDOWN_GRACE_SECONDS:  # NaN fails this too
        raise SettingsError(
            f"{name} must be a number of seconds from 0 to {MAX_SHUTDOWN_GRACE_SECONDS}, not {env.get(name)!r}"
        )
    return value


def _store_timeout(env: Mapping[str, str]) -> int:
    """TALLYHUB_STORE_TIMEOUT_SECONDS: whole seconds from 1 to 60 (default 5)."""
    value = _positive_int(env, "TALLYHUB_STORE_TIMEOUT_SECONDS", 5)
    if value > 60:
        raise SettingsError("TALLYHUB_STORE_TIMEOUT_SECONDS must be between 1 and 60 seconds")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not 0 <= value <= 60:
        raise SettingsError(f"{name} must be between 0 and 60 seconds")
    return value


def _whole_number(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if not raw.strip().isdigit():
        raise SettingsError(f"{name} must be a whole number (0 or more), not {raw!r}")
    return int(raw)


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, not {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive")
    return value
