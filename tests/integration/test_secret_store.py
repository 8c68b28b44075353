"""Provider secrets and the API-key pepper live in the secret store, not in the immutable
event history (crypto-shredding), on every backend (in memory, SQLite, PostgreSQL):

- new events carry a reference and a masked hint, never an envelope;
- after ``rotate_master`` and retiring the old master key, the old key and a copy of the
  store (every event, every row, and on SQLite every byte of its files) open nothing current;
- a superseded secret is deleted from the store;
- a store made before the secret store (envelopes in its events) upgrades in place, and
  what its history still holds is reported, not hidden;
- processes creating the table at once do not race on DDL; a process that cached a
  secret keeps serving it through a master-key rotation, and sees a rotated credential.
"""

import json
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

from adapters.bootstrap import build_services
from adapters.crypto.aes_gcm import AesGcmKeyVault, generate_master_key
from adapters.crypto.key_digest import HmacApiKeyScheme
from adapters.crypto.key_ring import KeyRing
from adapters.settings import Settings, parse_database_url
from adapters.workers.credential_probe import probe_disabled_credentials
from adapters.workers.hold_sweeper import run_sweeps
from application import key_management as km
from application.accounts import Accounts
from application.ledger import PEPPER_CONTEXT, Ledger, _credential_context, secret_context
from application.providers import ProviderRegistry
from domain.catalog import Catalog
from domain.deployment import Deployment
from domain.errors import InvalidRequest, SecretError
from domain.price_book import PriceBook
from domain.provider import Provider
from tests.conftest import PG_CONNINFO, PgSchemas
from tests.fakes.clock import FakeClock
from tests.support.gateway import cli, gateway_env

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "store_before_secrets_table"
K1, K2 = f"k1:{generate_master_key()}", f"k2:{generate_master_key()}"
OPENAI, OPENAI_B, ANTHROPIC, ROTATED = (
    "sk-shred-openai-1111",
    "sk-shred-openai-b-2222",
    "sk-shred-anthropic-3333",
    "sk-shred-rotated-4444",
)


def vault(*entries: str) -> AesGcmKeyVault:
    return AesGcmKeyVault(KeyRing.parse(",".join(entries), source="TEST"))


class Backend:
    """One event store (and its secret store) that can be opened again, as a new process would."""

    def __init__(self, kind: str, tmp_path: Path, pg_schemas: PgSchemas) -> None:
        self.kind, self.dir = kind, tmp_path
        if kind == "sqlite":
            self.env = {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(tmp_path / "store.sqlite"),
                "CREATE_TABLE": "y",
            }
        elif kind == "postgres":
            self.url = pg_schemas.new_url()
            self.schema = self.url.rpartition("schema=")[2]
            self.env = parse_database_url(self.url, data_dir=tmp_path).eventsourcing_env(create_tables=True)
        else:
            self.env = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
        self.kept: Ledger | None = None  # in memory there is one ledger: "reopening" swaps its key ring
        self.clock = FakeClock()

    @contextmanager
    def opened(self, *entries: str, read_cache_seconds: float = 0.0) -> Iterator[Ledger]:
        if self.kind == "memory":
            if self.kept is None:
                self.kept = Ledger(
                    self.env, vault=vault(*entries), key_scheme_factory=HmacApiKeyScheme, clock=self.clock
                )
            self.kept.vault = vault(*entries)
            yield self.kept
            return
        ledger = Ledger(
            self.env,
            vault=vault(*entries),
            key_scheme_factory=HmacApiKeyScheme,
            clock=self.clock,
            read_cache_seconds=read_cache_seconds,
        )
        try:
            yield ledger
        finally:
            ledger.close()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, pg_schemas: PgSchemas) -> Backend:
    return Backend(request.param, tmp_path, pg_schemas)


def envelopes_in(value: Any) -> Iterator[dict[str, str]]:
    """Every envelope-shaped object inside a decoded event."""
    if isinstance(value, dict):
        if "wrapped_key" in value or "ciphertext" in value:
            yield value
        for item in value.values():
            yield from envelopes_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from envelopes_in(item)


def event_envelopes(ledger: Ledger) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    for notification in ledger.recorder.select_notifications(start=1, limit=100_000):
        found += envelopes_in(json.loads(notification.state))
    return found


def contexts(ledger: Ledger) -> list[bytes]:
    """Every associated data an envelope of this store could be bound to."""
    found = [PEPPER_CONTEXT] + [secret_context(row.ref) for row in ledger.secret_store.all()]
    for provider in ledger.list_providers():
        for credential in provider.credentials:
            found.append(_credential_context(provider.name, credential.credential_id))
            if credential.secret_ref:
                found.append(secret_context(credential.secret_ref))
    return found


def what_opens(key: AesGcmKeyVault, envelopes: list[dict[str, str]], contexts_: list[bytes]) -> set[bytes]:
    opened = set()
    for envelope in envelopes:
        for context in contexts_:
            try:
                opened.add(key.open(envelope, context=context))
            except SecretError:
                pass
    return opened


def populate(ledger: Ledger) -> None:
    ledger.initialise()
    ProviderRegistry(ledger).register_provider("openai", "openai", base_url=None, region=None, secret=OPENAI)
    ProviderRegistry(ledger).add_credential("openai", OPENAI_B)
    ProviderRegistry(ledger).register_provider("anthropic", "anthropic", base_url=None, region=None, secret=ANTHROPIC)
    Accounts(ledger).create_account("acme")


def current_secrets(ledger: Ledger) -> set[bytes]:
    now = ledger.clock.now()
    found = {ledger.open_credential(p, c).encode() for p in ledger.list_providers() for c in p.current_credentials(now)}
    return found | {ledger.open_pepper(ledger.find(Deployment.create_id()))}


def store_files(directory: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(directory.iterdir()) if path.is_file())


# --- new stores ---------------------------------------------------------------------


def test_new_events_carry_a_reference_and_a_hint_never_an_envelope(backend: Backend) -> None:
    with backend.opened(K1) as ledger:
        populate(ledger)
        ProviderRegistry(ledger).rotate_credential("anthropic", ROTATED, grace=timedelta(seconds=60))
        km.rotate_master(ledger)
        assert event_envelopes(ledger) == []
        states = b"".join(n.state for n in ledger.recorder.select_notifications(start=1, limit=100_000))
        for secret in (OPENAI, OPENAI_B, ANTHROPIC, ROTATED):
            assert secret[:-4].encode() not in states
        openai = ledger.get_provider("openai")
        assert [c.hint for c in openai.credentials] == ["…1111", "…2222"]
        assert all(ledger.secret_store.get(c.secret_ref) is not None for c in openai.credentials)
        assert openai.sealed_in_history == {}
        status = km.secrets_status(ledger)
        assert status.in_history == {} and status.not_moved == []


def test_after_rotate_master_and_retiring_the_old_key_a_copy_of_the_store_opens_nothing_current(
    backend: Backend,
) -> None:
    """The issue's test: every envelope found in the events and the table, tried with the
    retired key under every context; on SQLite, no byte of the old rows is left in its files."""
    with backend.opened(K1) as ledger:
        populate(ledger)
        ProviderRegistry(ledger).rotate_credential("anthropic", ROTATED, grace=timedelta(seconds=60))
        old_rows = ledger.secret_store.all()
        assert len(old_rows) == 5 and {row.kid for row in old_rows} == {"k1"}
    with backend.opened(K2, K1) as ledger:
        result = km.rotate_master(ledger)
        assert len(result.rewrapped) == 5 and result.status is not None and result.status.retirable_kids == ["k1"]
    with backend.opened(K2) as ledger:  # k1 retired
        km.check_key_ring(ledger)
        current = current_secrets(ledger)
        assert {OPENAI.encode(), OPENAI_B.encode(), ANTHROPIC.encode(), ROTATED.encode()} <= current
        copy = event_envelopes(ledger) + [row.envelope for row in ledger.secret_store.all()]
        assert len(copy) == 5
        retired = vault(K1)
        assert what_opens(retired, copy, contexts(ledger)) == set()
        for row in ledger.secret_store.all():
            with pytest.raises(SecretError, match="not configured"):
                retired.open(row.envelope, context=secret_context(row.ref))
        assert what_opens(vault(K2), copy, contexts(ledger)) == current  # the current key opens each one
    if backend.kind == "sqlite":
        files = store_files(backend.dir)
        for row in old_rows:
            assert row.envelope["wrapped_key"].encode() not in files
            assert row.envelope["ciphertext"].encode() not in files


def test_a_superseded_secret_is_deleted_from_the_store(backend: Backend) -> None:
    with backend.opened(K1) as ledger:
        populate(ledger)
        refs = {c.credential_id: c.secret_ref for c in ledger.get_provider("openai").credentials}
        first, second = refs
        now_gone = ProviderRegistry(ledger).rotate_credential(
            "openai", ROTATED, credential_id=first
        )  # no grace: gone now
        assert ledger.secret_store.get(refs[first]) is None
        graceful = ProviderRegistry(ledger).rotate_credential(
            "openai", ROTATED + "-b", credential_id=second, grace=timedelta(seconds=30)
        )
        assert ledger.secret_store.get(refs[second]) is not None  # used until its grace period ends
        backend.clock.advance(seconds=31)
        assert ProviderRegistry(ledger).retire_due_credentials() == [("openai", second)]
        assert ledger.secret_store.get(refs[second]) is None
        ProviderRegistry(ledger).enable_credential("openai", second)  # re-enabled, a retired credential stays unused
        assert second not in [
            c.credential_id for c in ledger.get_provider("openai").usable_credentials(backend.clock.now())
        ]
        km.check_key_ring(ledger)  # no current secret is missing
        new_ref = ledger.get_provider("openai").credential(now_gone.new_credential_id).secret_ref
        ProviderRegistry(ledger).delete_credential("openai", now_gone.new_credential_id)
        assert ledger.secret_store.get(new_ref) is None
        wanted = {ledger.find(Deployment.create_id()).pepper_ref} | {
            c.secret_ref for p in ledger.list_providers() for c in p.current_credentials(backend.clock.now())
        }
        assert {row.ref for row in ledger.secret_store.all()} == wanted
        assert graceful.old_credential_id == second


def test_rows_nothing_refers_to_are_deleted_once_old(backend: Backend) -> None:
    """A crash between a row and its event (or a lost race) leaves a row nothing refers to."""
    with backend.opened(K1) as ledger:
        populate(ledger)
        ledger.secret_store.add("credential:openai:crashed", vault(K1).seal(b"x", context=b"x"))
        assert km.delete_superseded_secrets(ledger) == 0  # young: it may be a write in flight
        assert km.delete_superseded_secrets(ledger, orphan_age=timedelta(0)) == 1
        assert ledger.secret_store.get("credential:openai:crashed") is None
        km.check_key_ring(ledger)


# --- upgrading a store made before the secret store ----------------------------------


def legacy_store(ledger: Ledger, sealer: AesGcmKeyVault) -> dict[str, str]:
    """The events the code before the secret store wrote: envelopes inside the events."""
    pepper = b"p" * 32
    scheme = HmacApiKeyScheme(pepper)
    admin = scheme.new_admin_key()
    deployment = Deployment(
        sealed_pepper=sealer.seal(pepper, context=PEPPER_CONTEXT), admin_key_digest=scheme.digest(admin)
    )
    ledger.save(deployment)
    catalog = Catalog()
    catalog.list_provider("openai")
    provider = Provider(name="openai", kind="openai", base_url=None, region=None)
    for credential_id, secret in (("aaaaaaaaaaaa", OPENAI), ("bbbbbbbbbbbb", OPENAI_B)):
        provider._credential_added(
            credential_id=credential_id,
            hint="…" + secret[-4:],
            weight=1,
            sealed=sealer.seal(secret.encode(), context=_credential_context("openai", credential_id)),
        )
    ledger.save(catalog, PriceBook(), provider)
    return {"admin": admin}


def test_a_postgres_store_made_before_the_secret_store_upgrades_in_place(tmp_path: Path, pg_schemas: PgSchemas) -> None:
    backend = Backend("postgres", tmp_path, pg_schemas)
    with backend.opened(K1) as ledger:
        admin = legacy_store(ledger, vault(K1))["admin"]
        before = len(event_envelopes(ledger))
        assert before == 3
    with backend.opened(K2, K1) as ledger:
        ledger.load_deployment()
        status = km.secrets_status(ledger)
        assert status.not_moved == [
            "API-key pepper",
            "credential aaaaaaaaaaaa of openai",
            "credential bbbbbbbbbbbb of openai",
        ]
        assert status.in_history == {"k1": 3} and status.rotation_needed
        result = km.rotate_master(ledger)
        assert result.moved == status.not_moved and result.rewrapped == []  # moved straight under k2
        assert result.status is not None and result.status.not_moved == [] and result.status.in_history == {"k1": 3}
    with backend.opened(K2) as ledger:
        ledger.load_deployment()
        assert ledger.is_admin_key(admin)
        km.check_key_ring(ledger)
        assert {ledger.open_credential(p, c) for p in ledger.list_providers() for c in p.credentials} == {
            OPENAI,
            OPENAI_B,
        }
        rows = [row.envelope for row in ledger.secret_store.all()]
        assert what_opens(vault(K1), rows, contexts(ledger)) == set()
        # Honestly: the history's envelopes cannot be edited, and k1 still opens them.
        assert what_opens(vault(K1), event_envelopes(ledger), contexts(ledger)) == {
            b"p" * 32,
            OPENAI.encode(),
            OPENAI_B.encode(),
        }


def test_a_sqlite_store_made_by_the_previous_version_upgrades_in_place(tmp_path: Path) -> None:
    """The committed fixture was made with the code before the secret store: ``init``, two
    providers, a user key, ``rotate-master`` k0 -> k1, a credential rotation. Through the CLI."""
    made = json.loads((FIXTURE / "fixture.json").read_text())
    keys = made["master_keys"]
    data = tmp_path / "data"
    shutil.copytree(FIXTURE, data, ignore=shutil.ignore_patterns("*.json"))
    env = gateway_env(data, None, TALLYHUB_MASTER_KEYS=f"k1:{keys['k1']},k0:{keys['k0']}")
    before = cli(env, "secrets", "status")
    assert before["not_moved"] and before["in_history"] == {"envelopes": 7, "kids": {"k0": 3, "k1": 4}}
    assert before["rotation_needed"] and len(before["not_moved"]) == 3
    cli(env, "providers", "list")  # what serve does at start: the secrets move to the store, under k1
    moved = cli(env, "secrets", "status")
    assert moved["not_moved"] == [] and moved["in_use"] == {"k1": {"count": 3, "secrets": before["not_moved"]}}
    env["TALLYHUB_MASTER_KEYS"] = f"k2:{generate_master_key()},k1:{keys['k1']},k0:{keys['k0']}"
    rotated = cli(env, "secrets", "rotate-master")
    assert rotated["moved"] == [] and sorted(rotated["rewrapped"]) == sorted(before["not_moved"])
    assert rotated["status"]["retirable_kids"] == ["k1", "k0"]
    assert cli(env, "init")["admin_key"] is None  # init on the upgraded store changes nothing
    env["TALLYHUB_MASTER_KEYS"] = env["TALLYHUB_MASTER_KEYS"].split(",")[0]  # k0 and k1 retired
    after = cli(env, "secrets", "status")
    assert after["not_moved"] == [] and not after["rotation_needed"] and set(after["in_use"]) == {"k2"}
    assert after["in_history"]["envelopes"] == 7  # said, not hidden
    providers = {p["name"]: p for p in cli(env, "providers", "list")["data"]}  # serves from the upgraded store
    assert [c["hint"] for c in providers["openai"]["credentials"]] == ["…0001", "…0003"]
    ring = vault(env["TALLYHUB_MASTER_KEYS"])
    ledger = Ledger(
        parse_database_url(None, data).eventsourcing_env(create_tables=False),
        vault=ring,
        key_scheme_factory=HmacApiKeyScheme,
    )
    try:
        ledger.load_deployment()
        assert ledger.authenticate(made["user_key"]).prefix == "thk_…"  # the old key works, shown safely
        current = current_secrets(ledger)
        secrets = made["provider_secrets"]
        assert {secrets["openai_rotated"].encode(), secrets["anthropic"].encode()} <= current
        old = vault(f"k1:{keys['k1']}", f"k0:{keys['k0']}")
        rows = [row.envelope for row in ledger.secret_store.all()]
        assert len(rows) == 3 and what_opens(old, rows, contexts(ledger)) == set()
        # The superseded openai secret was never moved: only the history holds it.
        assert secrets["openai"].encode() not in current
    finally:
        ledger.close()
    files = store_files(data)
    for text in (secrets["openai_rotated"], secrets["anthropic"]):
        assert text[:-4].encode() not in files


# --- processes ----------------------------------------------------------------------


def test_processes_creating_the_table_at_once_do_not_race(tmp_path: Path, pg_schemas: PgSchemas) -> None:
    backend = Backend("postgres", tmp_path, pg_schemas)
    with backend.opened(K1) as first:
        first.recorder.max_notification_id()  # the event tables exist (init made them)
    small_pool = {"CREATE_TABLE": "n", "POSTGRES_POOL_SIZE": "1", "POSTGRES_MAX_OVERFLOW": "0"}  # the server is shared
    ledgers = [
        Ledger({**backend.env, **small_pool}, vault=vault(K1), key_scheme_factory=HmacApiKeyScheme) for _ in range(6)
    ]
    barrier = threading.Barrier(len(ledgers))
    failures: list[BaseException] = []

    def create(ledger: Ledger) -> None:
        barrier.wait()
        try:
            ledger.secret_store.create_table()
        except BaseException as error:  # noqa: BLE001 - reported below
            failures.append(error)

    threads = [threading.Thread(target=create, args=(ledger,)) for ledger in ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for ledger in ledgers:
        ledger.close()
    assert failures == [], [f"{type(error).__name__}: {error}" for error in failures]
    with psycopg.connect(PG_CONNINFO) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = 'ledger_secrets'",
            (backend.schema,),
        ).fetchone()
    assert tables == (1,)


def test_a_process_keeps_its_opened_secret_through_rotate_master_and_sees_a_rotated_credential(
    tmp_path: Path, pg_schemas: PgSchemas
) -> None:
    backend = Backend("sqlite", tmp_path, pg_schemas)
    with backend.opened(K1) as ledger:
        populate(ledger)
    with backend.opened(K2, K1) as serving, backend.opened(K2, K1) as operator:
        reads: list[str] = []
        get = serving.secret_store.get
        serving.secret_store.get = lambda ref: reads.append(ref) or get(ref)  # type: ignore[method-assign]

        def secret_of(name: str) -> set[str]:
            provider = serving.get_provider(name)
            return {serving.credential_secret(provider, c) for c in provider.usable_credentials(serving.clock.now())}

        assert secret_of("anthropic") == {ANTHROPIC}
        assert secret_of("anthropic") == {ANTHROPIC} and len(reads) == 1  # then kept: one dict lookup
        km.rotate_master(operator)  # another process re-encrypts every row
        assert secret_of("anthropic") == {ANTHROPIC} and len(reads) == 1  # the same secret, still kept
        ProviderRegistry(operator).rotate_credential("anthropic", ROTATED)  # another process rotates the credential
        assert secret_of("anthropic") == {ROTATED} and len(reads) == 2  # its new reference is read once


def test_the_credential_probe_leaves_a_retired_credential_whose_secret_is_gone_alone() -> None:
    """A rotated credential disabled automatically during its grace period: once the period
    ends its secret is deleted, and the probe round must not try (and fail) to open it."""
    clock = FakeClock()
    ledger = Ledger(
        {"PERSISTENCE_MODULE": "eventsourcing.popo"}, vault=vault(K1), key_scheme_factory=HmacApiKeyScheme, clock=clock
    )
    ledger.initialise()
    ProviderRegistry(ledger).register_provider(
        "openai", "openai", base_url="http://127.0.0.1:9/v1", region=None, secret=OPENAI
    )
    rotation = ProviderRegistry(ledger).rotate_credential("openai", ROTATED, grace=timedelta(seconds=30))
    ProviderRegistry(ledger).disable_credential(
        "openai", rotation.old_credential_id, "refused by the provider", automatic=True
    )
    clock.advance(seconds=31)
    assert km.delete_superseded_secrets(ledger) == 1
    services = build_services(Settings(), ledger=ledger)
    assert anyio.run(probe_disabled_credentials, services) == 0
    ledger.close()


def test_a_process_reading_a_provider_from_before_a_rotation_rereads_it_when_the_old_secret_is_gone(
    tmp_path: Path, pg_schemas: PgSchemas
) -> None:
    """With the read cache on, a process may hold a provider from before another process
    rotated its credential (no grace: the old secret is deleted). Opening the old one fails
    once, and the provider is read afresh for the next request."""
    backend = Backend("sqlite", tmp_path, pg_schemas)
    with backend.opened(K1) as ledger:
        populate(ledger)
    with backend.opened(K1, read_cache_seconds=3600) as serving, backend.opened(K1) as operator:
        stale = serving.recent_provider("anthropic")
        assert stale is not None
        ProviderRegistry(operator).rotate_credential("anthropic", ROTATED)
        with pytest.raises(SecretError, match="missing from the secret store"):
            serving.credential_secret(stale, stale.credentials[0])
        fresh = serving.recent_provider("anthropic")
        assert fresh is not None and fresh is not stale
        assert {serving.credential_secret(fresh, c) for c in fresh.usable_credentials(serving.clock.now())} == {ROTATED}


def test_a_refused_credential_leaves_no_secret_behind() -> None:
    ledger = Ledger({"PERSISTENCE_MODULE": "eventsourcing.popo"}, vault=vault(K1), key_scheme_factory=HmacApiKeyScheme)
    ledger.initialise()
    ProviderRegistry(ledger).register_provider("openai", "openai", base_url=None, region=None, secret=OPENAI)
    rows = len(ledger.secret_store.all())
    with pytest.raises(InvalidRequest, match="weight"):
        ProviderRegistry(ledger).add_credential("openai", OPENAI_B, weight=0)
    assert len(ledger.secret_store.all()) == rows
    ledger.close()


def test_serve_deletes_a_rotated_credentials_secret_once_its_grace_period_ends() -> None:
    """The periodic sweep of ``serve`` retires rotated credentials, so the old secret does not
    wait in the store for the next rotation."""
    clock = FakeClock()
    ledger = Ledger(
        {"PERSISTENCE_MODULE": "eventsourcing.popo"}, vault=vault(K1), key_scheme_factory=HmacApiKeyScheme, clock=clock
    )
    ledger.initialise()
    ProviderRegistry(ledger).register_provider(
        "openai", "openai", base_url="http://127.0.0.1:9/v1", region=None, secret=OPENAI
    )
    old_ref = ledger.get_provider("openai").credentials[0].secret_ref
    ProviderRegistry(ledger).rotate_credential("openai", ROTATED, grace=timedelta(seconds=30))
    clock.advance(seconds=31)
    services = build_services(Settings(), ledger=ledger)

    async def sweeping_until_gone() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run_sweeps, services, 0.01)
            with anyio.fail_after(10):
                while ledger.secret_store.get(old_ref) is not None:
                    await anyio.sleep(0.01)
            tasks.cancel_scope.cancel()

    anyio.run(sweeping_until_gone)
    assert [c.enabled for c in ledger.get_provider("openai").credentials] == [False, True]
    ledger.close()
