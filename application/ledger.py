"""The Ledger application: the event-sourced infrastructure the application services
share. It saves and finds aggregates, runs a change as a unit of work retried on a
version conflict (``change``; ``change_account`` per account, through the group-commit
writer in ``serve``), keeps the hot path's read cache (``recent``, ``read_cache_seconds``),
snapshots accounts, opens the deployment (pepper, admin key) and holds the secret store.
Its typed reads (``get_account``, ``get_provider``, ``price_book``, ``authenticate``, …)
are here; the commands are the services beside it: application/accounts.py (Accounts),
api_keys.py (ApiKeys), providers.py (ProviderRegistry), prices.py (Prices), and
key_management.py (master keys). Configuration is by constructor arguments only.

Concurrency: in ``serve`` every account change goes through one writer thread per
process that saves many changes per transaction (application/group_commit.py);
elsewhere each account is changed under a per-process lock. Either way saves use
optimistic concurrency: when another process wrote first the store refuses the save
(IntegrityError) and the command is retried on the fresh state; a change that loses every
try to other writers runs once more fenced, under the store's insert lock (``change``).
Uniqueness that must hold across processes (one grant per idempotency key, one record per
request) is enforced by aggregate identity, so the store itself refuses a duplicate.
"""

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar
from uuid import UUID, uuid4

from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    ProcessingEvent,
    Repository,
    project_aggregate,
)
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, OperationalError, Recording, StoredEvent
from eventsourcing.utils import resolve_topic

from application.acting import attributed, current_actor, stamp_pending
from application.aggregate_cache import CopiedUnderLockRepository
from application.group_commit import AccountWriter
from application.hold_gate import HoldGate
from application.ports import ApiKeyScheme, Clock, KeyVault, SecretStore, SystemClock
from domain import ids
from domain.account import Account
from domain.api_key import ApiKey
from domain.catalog import Catalog
from domain.deployment import Deployment
from domain.errors import (
    AccountNotFound,
    AlreadyExists,
    ApiKeyNotFound,
    AuthenticationFailed,
    InvalidRequest,
    NotFound,
    NotInitialised,
    ProviderNotFound,
    SecretError,
)
from domain.price_book import PriceBook
from domain.provider import Credential, Provider
from domain.request_record import RequestRecord

log = logging.getLogger("tallyhub.ledger")
MAX_SAVE_ATTEMPTS = 20
KEPT_SECRETS = 1_000  # opened provider secrets kept in memory (all forgotten when it would be passed)
ACCOUNT_SNAPSHOT_INTERVAL = 1_000  # an account loads from its latest snapshot and at most this many events
PEPPER_CONTEXT = b"tallyhub:api-key-pepper"  # the pepper's envelope in events made before the secret store


class AccountContended(OperationalError):
    """A change lost ``MAX_SAVE_ATTEMPTS`` races in a row to other writers of the same
    aggregate (another process's batches on a hot account: its version moved on since the
    last load) on a store without the fenced last try (in memory; our SQLite and PostgreSQL
    recorders have it): the store is busy, the change is not wrong. An ``OperationalError``, so it is
    handled as the store away is: answered 503 ``store_unavailable``, and a settlement or void
    kept pending and retried (application/pending_settlements.py) instead of the request
    going unrecorded."""


# The secret store beside the event store (same database); the env variable of the same name overrides it.
SECRET_STORE_TOPIC = "adapters.persistence.secret_store:secret_store_for"

T = TypeVar("T")
A = TypeVar("A", bound=Aggregate)


class Ledger(Application[UUID]):
    name = "Ledger"
    is_snapshotting_enabled = True  # the snapshot store; snapshots are taken by ``save`` (accounts only)

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        vault: KeyVault,
        key_scheme_factory: Callable[[bytes], ApiKeyScheme],
        clock: Clock | None = None,
        secret_store: SecretStore | None = None,
        read_cache_seconds: float = 0.0,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        """``read_cache_seconds``: how old a hot-path read (keys, providers, aliases, prices)
        may be; this process's own writes evict at once; 0 disables it (every read is fresh).
        ``on_commit``: called after every successful save (one per group-commit batch); must
        be cheap and never raise (server mode wakes the projection workers with it)."""
        super().__init__(env)
        self.vault = vault
        # Provider secrets and the pepper, apart from the events (application/ports.py, SecretStore).
        self.secret_store: SecretStore = secret_store or resolve_topic(
            self.env.get("SECRET_STORE_TOPIC") or SECRET_STORE_TOPIC
        )(self.recorder)
        self.clock: Clock = clock or SystemClock()
        self._key_scheme_factory = key_scheme_factory
        self._key_scheme: ApiKeyScheme | None = None
        self._admin_key_digest: str | None = None
        self._locks: dict[UUID, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self.writer: AccountWriter | None = None
        self.hold_gate: HoldGate | None = None  # what the writer knows of accounts' room (serve)
        self._on_commit = on_commit
        # what a durable save recorded, handed over after it (embedded serve: its projections, adapters/bootstrap.py)
        self.on_recorded: Callable[[Sequence[Recording[UUID]]], None] | None = None
        self._read_cache_seconds = read_cache_seconds
        self._recent: dict[UUID, tuple[float, Any]] = {}
        self._opened: dict[Any, str] = {}  # credential_secret's opened secrets, by secret reference

    # --- deployment -------------------------------------------------------------

    def initialise(self) -> str:
        """Create the deployment (pepper, admin key, empty price book and catalog).

        Returns the admin key, which is shown once. Raises AlreadyExists if done before.
        """
        pepper = secrets.token_bytes(32)
        scheme = self._key_scheme_factory(pepper)
        admin_key = scheme.new_admin_key()
        pepper_ref = f"pepper:{uuid4().hex}"  # written first: a lost race or a crash leaves only an unused row
        self.seal_apart(pepper_ref, pepper)
        deployment = Deployment(sealed_pepper=None, admin_key_digest=scheme.digest(admin_key), pepper_ref=pepper_ref)
        try:
            self.save(deployment, PriceBook(), Catalog())
        except IntegrityError:
            raise AlreadyExists("this store is already initialised") from None
        self._key_scheme, self._admin_key_digest = scheme, deployment.admin_key_digest
        return admin_key

    def is_initialised(self) -> bool:
        return self.find(ids.DEPLOYMENT_ID) is not None

    def load_deployment(self) -> None:
        """Open the pepper with the master key; fails loudly if the key is wrong."""
        self._check_snapshot_store()  # every load reads it first
        deployment = self.find(ids.DEPLOYMENT_ID)
        if deployment is None:
            raise NotInitialised("the store is not initialised: run `tallyhub init`")
        self._key_scheme = self._key_scheme_factory(self.open_pepper(deployment))
        self._admin_key_digest = deployment.admin_key_digest

    def open_pepper(self, deployment: Deployment) -> bytes:
        if deployment.pepper_ref is not None:
            return self.open_apart(deployment.pepper_ref, "the API-key pepper")
        if deployment.legacy_sealed_pepper is None:
            raise SecretError("the API-key pepper: the deployment holds neither its reference nor its envelope")
        return self.vault.open(deployment.legacy_sealed_pepper, context=PEPPER_CONTEXT)

    def seal_apart(self, ref: str, plaintext: bytes) -> None:
        """Seal ``plaintext`` under a fresh data key into the secret store's row ``ref``."""
        if not self.secret_store.add(ref, self.vault.seal(plaintext, context=secret_context(ref))):
            raise AlreadyExists(f"the secret store already holds {ref!r}")

    def open_apart(self, ref: str, label: str) -> bytes:
        """The plaintext of the secret store's row ``ref``; SecretError when it is missing."""
        stored = self.secret_store.get(ref)
        if stored is None:
            raise SecretError(f"{label}: its secret is missing from the secret store (ref {ref!r})")
        return self.vault.open(stored.envelope, context=secret_context(ref))

    @property
    def deployment_loaded(self) -> bool:
        """The deployment was opened with the master key (``load_deployment``): keys can be checked."""
        return self._key_scheme is not None

    @property
    def read_cache_seconds(self) -> float:
        return self._read_cache_seconds

    @property
    def key_scheme(self) -> ApiKeyScheme:
        if self._key_scheme is None:
            self.load_deployment()
        assert self._key_scheme is not None
        return self._key_scheme

    def is_admin_key(self, presented: str) -> bool:
        scheme = self.key_scheme
        assert self._admin_key_digest is not None
        return scheme.matches(presented, self._admin_key_digest)

    # --- accounts: reads and the unit of work (the commands are application/accounts.py) ---

    def get_account(self, ref: str | UUID) -> Account:
        account_id = ref if isinstance(ref, UUID) else _parse_uuid(ref) or ids.account_id(ref)
        account = self.find(account_id)
        if not isinstance(account, Account):
            raise AccountNotFound(f"no account {ref!s}")
        return account

    def change_account(self, account_id: UUID, change: Callable[[Account], Sequence[Aggregate] | None]) -> bool:
        """Apply ``change`` to the account and save it with what it returns.

        ``change`` returns the other aggregates to save in the same transaction, or
        None when there is nothing to do (then nothing is saved and False returned).
        Retried on a version conflict with the account's fresh state.
        """
        change = attributed(change)
        if self.writer is not None and self.writer.running:
            return self.writer.submit(account_id, change)
        return self._change_account_alone(account_id, change)

    async def change_account_async(
        self, account_id: UUID, change: Callable[[Account], Sequence[Aggregate] | None]
    ) -> bool:
        """``change_account`` from the event loop: handed to the group-commit writer without
        a thread hop when it runs, else done on a worker thread. Once handed over, the change
        completes even if the caller is cancelled meanwhile (as a thread would)."""
        return await asyncio.shield(self.start_account_change(account_id, change))

    def start_account_change(
        self, account_id: UUID, change: Callable[[Account], Sequence[Aggregate] | None]
    ) -> "asyncio.Future[bool]":
        """``change_account_async`` handed over without waiting: the future resolves once
        the change is durable (or fails with its error). Await it shielded."""
        change = attributed(change)
        if self.writer is not None and self.writer.running:
            return self.writer.submit_async(account_id, change)
        return asyncio.get_running_loop().run_in_executor(None, self._change_account_alone, account_id, change)

    def _change_account_alone(self, account_id: UUID, change: Callable[[Account], Sequence[Aggregate] | None]) -> bool:
        with self._lock_for(account_id):
            return self.change(lambda: self.get_account(account_id), change)

    def start_group_commit(self) -> None:
        """From now on, account changes of this process are saved in batches (serve)."""
        if self.writer is None:
            self.hold_gate = HoldGate()
            self.writer = AccountWriter(
                self.get_account,
                self.save_unreturned,
                self._change_account_alone,
                latest_version=self._latest_version,
                gate=self.hold_gate,
            )
        self.writer.start()

    def _latest_version(self, aggregate_id: UUID) -> int | None:
        """The version of the aggregate's newest stored event (one indexed read, nothing decoded)."""
        latest_version = getattr(self.recorder, "latest_version", None)  # our SQLite and PostgreSQL recorders
        if latest_version is not None:
            version: int | None = latest_version(aggregate_id)
            return version
        newest = self.recorder.select_events(aggregate_id, desc=True, limit=1)
        return newest[0].originator_version if newest else None

    def stop_group_commit(self) -> None:
        if self.writer is not None:
            self.writer.stop()

    def change(self, load: Callable[[], A], change: Callable[[A], Sequence[Aggregate] | None]) -> bool:
        """Load, change and save, retried on a version conflict; once ``MAX_SAVE_ATTEMPTS``
        saves are lost to other writers, run once more fenced (``_change_fenced``). ``change``
        must build the other aggregates it returns afresh on each call: a refused save has
        already drained their pending events, so an object reused across attempts saves nothing."""
        for attempt in range(MAX_SAVE_ATTEMPTS):
            aggregate = load()
            loaded = aggregate.version
            others = change(aggregate)
            if others is None:
                return False
            try:
                self.save(aggregate, *others)
                return True
            except IntegrityError as error:
                if attempt == MAX_SAVE_ATTEMPTS - 1 and self._latest_version(aggregate.id) == loaded:
                    raise  # refused for what the change saves (a record that exists), not a race
                refused = error
        return self._change_fenced(load, change, refused)

    def _change_fenced(
        self, load: Callable[[], A], change: Callable[[A], Sequence[Aggregate] | None], refused: IntegrityError
    ) -> bool:
        """The last try of a change whose optimistic saves all lost to other writers (another
        process's batches on a hot account commit inside every load→save window): the store
        reads the aggregate's newer events, ``change`` is decided on them and its events are
        inserted, in one transaction holding the lock every insert takes
        (adapters/persistence/fence.py), so no other writer comes in between. A refusal now is
        the change's own (a record that exists) and is raised as it is. The lock is held
        across one read and the change: on this rare path only. A store without the fence
        (in memory) answers AccountContended, as the store busy."""
        insert_fenced = getattr(self.recorder, "insert_fenced", None)  # our SQLite and PostgreSQL recorders
        if insert_fenced is None:
            raise AccountContended(f"{MAX_SAVE_ATTEMPTS} saves in a row refused: {refused}") from refused
        aggregate = load()  # outside the lock: its snapshot and the events so far
        saved: tuple[Aggregate, ...] = ()
        due: list[Account] = []

        def decide(newer: Sequence[StoredEvent]) -> list[StoredEvent]:
            nonlocal saved, due
            caught_up = project_aggregate(aggregate, map(self.mapper.to_domain_event, newer))  # under the lock
            assert caught_up is aggregate  # our aggregates are mutable: their events change them in place
            others = change(aggregate)
            if others is None:
                return []
            saved = (aggregate, *others)
            stamp_pending(saved, current_actor())
            due = _snapshots_due(saved)
            return [self.mapper.to_stored_event(event) for obj in saved for event in obj.collect_events()]

        insert_fenced(aggregate.id, aggregate.version, decide)
        log.info("%s saves of %s lost to other writers: decided fenced", MAX_SAVE_ATTEMPTS, aggregate.id)
        if not saved:
            return False
        self._after_save(saved, due, recorded=True)
        return True

    # --- API keys: reads (the commands are application/api_keys.py) ----------------

    def get_api_key(self, key_id: str | UUID) -> ApiKey:
        parsed = key_id if isinstance(key_id, UUID) else _parse_uuid(key_id)
        key = self.find(parsed) if parsed else None
        if not isinstance(key, ApiKey):
            raise ApiKeyNotFound(f"no API key {key_id}")
        return key

    def authenticate(self, presented: str) -> ApiKey:
        """The usable key for this secret, or AuthenticationFailed (never says why)."""
        if not presented:
            raise AuthenticationFailed("missing API key")
        key = self.recent(ids.api_key_id(self.key_scheme.digest(presented)))
        if not isinstance(key, ApiKey) or not key.is_usable(self.clock.now()):
            raise AuthenticationFailed("invalid API key")
        return key

    def get_request_record(self, request_id: str | UUID) -> RequestRecord:
        parsed = request_id if isinstance(request_id, UUID) else _parse_uuid(request_id)
        record = self.find(parsed) if parsed else None
        if not isinstance(record, RequestRecord):
            raise NotFound(f"no request {request_id}")
        return record

    # --- providers: reads and their secrets (the commands are application/providers.py) ---

    def get_provider(self, name: str) -> Provider:
        provider = self.find_provider(name)
        if provider is None:
            raise ProviderNotFound(f"no provider {name!r}")
        return provider

    def find_provider(self, name: str) -> Provider | None:
        provider = self.find(ids.provider_id(name))
        return provider if isinstance(provider, Provider) else None

    def recent_provider(self, name: str) -> Provider | None:
        """``find_provider`` for the hot path: at most ``read_cache_seconds`` old; never mutate it."""
        provider = self.recent(ids.provider_id(name))
        return provider if isinstance(provider, Provider) else None

    def list_providers(self) -> list[Provider]:
        return [self.get_provider(name) for name in self.catalog().provider_names]

    def open_credential(self, provider: Provider, credential: Credential) -> str:
        ref = credential.secret_ref
        if ref is not None:
            return self.open_apart(ref, f"credential {credential.credential_id} of {provider.name}").decode()
        if credential.legacy_sealed is None:
            raise SecretError(f"credential {credential.credential_id} of {provider.name} has no secret")
        context = _credential_context(provider.name, credential.credential_id)
        return self.vault.open(credential.legacy_sealed, context=context).decode()

    def credential_secret(self, provider: Provider, credential: Credential) -> str:
        """``open_credential`` for the hot path: each opened secret is kept in this process's
        memory (never written anywhere), keyed by its secret reference: one dict lookup. A
        reference names one plaintext for its whole life (a rotated credential is a new
        credential, a re-encrypted row holds the same secret), so no entry goes stale; only
        a miss reads the secret store. Opening cost a read and two AES-GCM decryptions.

        A row that is gone means the provider read here is older than a rotation or deletion
        (the read cache): it is dropped from the cache so the next request reads it afresh."""
        key = credential.secret_ref or (provider.name, credential.credential_id)
        secret = self._opened.get(key)
        if secret is None:
            try:
                secret = self.open_credential(provider, credential)
            except SecretError:
                self._recent.pop(provider.id, None)
                raise
            if len(self._opened) >= KEPT_SECRETS:
                self._opened.clear()
            self._opened[key] = secret
        return secret

    def delete_secrets(self, refs: Sequence[str | None]) -> None:
        """Delete superseded secrets from the secret store and from this process's memory."""
        gone = [ref for ref in refs if ref is not None]
        for ref in gone:
            self.forget_secret(ref)
        self.secret_store.delete(gone)

    def forget_secret(self, ref: str) -> None:
        """Drop an opened secret from this process's memory (its row is being deleted)."""
        self._opened.pop(ref, None)

    # --- prices and aliases (read side; the commands are application/prices.py) ------

    def catalog(self) -> Catalog:
        catalog = self.find(ids.CATALOG_ID)
        if not isinstance(catalog, Catalog):
            raise NotInitialised("the store is not initialised: run `tallyhub init`")
        return catalog

    def recent_aliases(self) -> dict[str, list[str]]:
        """The aliases for the hot path: at most ``read_cache_seconds`` old; never mutate it."""
        catalog = self.recent(ids.CATALOG_ID)
        if not isinstance(catalog, Catalog):
            raise NotInitialised("the store is not initialised: run `tallyhub init`")
        return catalog.aliases

    def check_models_known(self, models: Iterable[str]) -> None:
        """Raise InvalidRequest naming the first model that is not PROVIDER/MODEL of a registered provider."""
        for model in models:
            validate_model_id(model)
            if self.find_provider(model.partition("/")[0]) is None:
                raise InvalidRequest(f"{model}: no provider {model.partition('/')[0]!r} is registered", param="models")

    def price_book(self) -> PriceBook:
        book = self.find(ids.PRICE_BOOK_ID)
        if not isinstance(book, PriceBook):
            raise NotInitialised("the store is not initialised: run `tallyhub init`")
        return book

    def recent_price_book(self) -> PriceBook:
        """``price_book`` for the hot path: at most ``read_cache_seconds`` old; never mutate it."""
        book = self.recent(ids.PRICE_BOOK_ID)
        if not isinstance(book, PriceBook):
            raise NotInitialised("the store is not initialised: run `tallyhub init`")
        return book

    def recent(self, aggregate_id: UUID) -> Any:
        """The aggregate (or None) as read at most ``read_cache_seconds`` ago."""
        if self._read_cache_seconds <= 0:
            return self.find(aggregate_id)
        now = time.monotonic()
        cached = self._recent.get(aggregate_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        aggregate = self.find(aggregate_id)
        if aggregate is not None:  # misses are not kept: random bad keys must not grow the cache
            self._recent[aggregate_id] = (now + self._read_cache_seconds, aggregate)
        return aggregate

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        """eventsourcing's ``Application.save``, step for step, but collecting an aggregate's
        events without its two ``isinstance`` checks against runtime protocols
        (``ProcessingEvent.collect_events``): about 145,000 instructions an aggregate saved, and
        every billed request saves its record, every group commit its accounts. Anything but an
        ``Aggregate`` is collected as eventsourcing does."""
        return self._save_objs(objs, kwargs, recordings_wanted=True)

    def save_unreturned(self, *objs: Any) -> None:
        """``save`` for a caller that does not read its recordings (the group-commit writer's
        batches): the same events stored in the same transaction, the same
        listener told, the same hooks run after. Only eventsourcing's ``Recording`` and
        ``Notification`` per event, which nobody would read, are not built unless
        ``on_recorded`` takes them (it does in embedded mode): about 17,000 instructions an
        event, three events a billed request (tests/unit/test_ledger_save_unreturned.py)."""
        self._save_objs(objs, {}, recordings_wanted=False)

    def _save_objs(self, objs: Sequence[Any], kwargs: dict[str, Any], *, recordings_wanted: bool) -> Any:
        stamp_pending(objs, current_actor())
        due = _snapshots_due(objs)
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        for obj in objs:
            if isinstance(obj, Aggregate):
                processing_event.events.extend(obj.collect_events())
                processing_event.aggregates[obj.id] = obj
            else:
                processing_event.collect_events(obj)
        processing_event.saved_kwargs.update(kwargs)
        if not recordings_wanted and self.on_recorded is None:
            recorded = self._record_only(processing_event)
            self._take_snapshots(processing_event)
            self.notify(processing_event.events)  # eventsourcing's deprecated hook, called as its save does
            self._after_save(objs, due, recorded=recorded)
            return None
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)  # eventsourcing's deprecated hook, called as its save does
        self._after_save(objs, due, recorded=bool(recordings))
        return recordings

    def _record_only(self, processing_event: ProcessingEvent[UUID]) -> bool:
        """eventsourcing's ``Application._record`` and ``EventStore.put``, step for step, but
        without the ``Recording`` (and its ``Notification``) per event that ``put`` returns:
        whether the store gave the events notification ids, as ``bool(recordings)`` would be."""
        store = self.events
        stored_events = list(map(store.mapper.to_stored_event, processing_event.events))
        notification_ids = store.recorder.insert_events(
            stored_events, tracking=processing_event.tracking, **processing_event.saved_kwargs
        )
        if self.repository.cache and not self.repository.fastforward:
            for aggregate_id, aggregate in processing_event.aggregates.items():
                self.repository.cache.put(aggregate_id, aggregate)
        return bool(notification_ids)

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        """eventsourcing's hook after a durable save (``save``): its recordings, each event with
        its notification id, to ``on_recorded``; it must never raise."""
        if self.on_recorded is not None and recordings:
            self.on_recorded(recordings)

    def _after_save(self, objs: Sequence[Any], due: Sequence[Account], *, recorded: bool) -> None:
        """What follows a durable save (``save``, ``_change_fenced``): the read cache evicted, the
        projection workers woken, the accounts that passed a snapshot interval snapshotted."""
        for obj in objs:
            if isinstance(obj, Aggregate):
                self._recent.pop(obj.id, None)  # this process sees its own writes at once
        if self._on_commit is not None and recorded:
            self._on_commit()
        for account in due:
            self._snapshot(account)

    def _snapshot(self, account: Account) -> None:
        """Store the account's state as saved just now (taken from the object, not by loading
        it). A snapshot only shortens loading: if it fails, the events still hold everything."""
        assert self.snapshots is not None
        try:
            self.snapshots.put([Account.Snapshot.take(account)])
        except Exception:  # noqa: BLE001 - logged; the save itself is durable
            log.exception("could not store a snapshot of account %s at version %s", account.id, account.version)

    def _check_snapshot_store(self) -> None:
        """A missing table is the operator's to fix with ``init``; any other failure (the
        database is down, say) is raised as it is."""
        assert self.snapshots is not None
        try:
            self.snapshots.recorder.select_events(ids.DEPLOYMENT_ID, limit=1)
        except Exception as exc:  # noqa: BLE001 - sorted below
            if not _is_missing_table(exc):
                raise
            try:
                self.recorder.max_notification_id()
            except Exception as events_exc:  # noqa: BLE001 - sorted below
                if not _is_missing_table(events_exc):
                    raise
                raise NotInitialised("the store is not initialised: run `tallyhub init`") from None
            raise NotInitialised(
                "the store was made by an earlier version without account snapshots: "
                "run `tallyhub init` once to add their table"
            ) from None

    # --- helpers -----------------------------------------------------------------

    def construct_repository(self) -> Repository[UUID]:
        """eventsourcing's repository, its copies of cached aggregates taken under the lock
        that fast-forwards them (application/aggregate_cache.py)."""
        made = super().construct_repository()  # read from the environment as eventsourcing reads it
        cache_maxsize = self.env.get(self.AGGREGATE_CACHE_MAXSIZE)
        return CopiedUnderLockRepository(
            event_store=made.event_store,
            snapshot_store=made.snapshot_store,
            cache_maxsize=int(cache_maxsize) if cache_maxsize else None,
            fastforward=made.fastforward,
            fastforward_skipping=made.fastforward_skipping,
            deepcopy_from_cache=made.deepcopy_from_cache,
        )

    def find(self, aggregate_id: UUID) -> Any:
        """The aggregate with this id, or None."""
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    def _lock_for(self, account_id: UUID) -> threading.Lock:
        with self._locks_guard:
            lock = self._locks.get(account_id)
            if lock is None:
                lock = self._locks[account_id] = threading.Lock()
            return lock


def credential_ref(provider_name: str, credential_id: str) -> str:
    """A credential's row in the secret store."""
    return f"credential:{provider_name}:{credential_id}"


def secret_context(ref: str) -> bytes:
    """What a secret-store envelope is bound to: its row (it cannot be moved to another)."""
    return b"tallyhub:secret:" + ref.encode()


def _credential_context(provider_name: str, credential_id: str) -> bytes:
    """What a credential's envelope was bound to in events made before the secret store."""
    return f"tallyhub:credential:{provider_name}:{credential_id}".encode()


def _parse_uuid(text: str) -> UUID | None:
    try:
        return UUID(text)
    except (ValueError, TypeError, AttributeError):
        return None


def clean_name(name: str, what: str) -> str:
    cleaned = (name or "").strip()
    if not cleaned or len(cleaned) > 200 or any(ch.isspace() or not ch.isprintable() for ch in cleaned):
        raise InvalidRequest(f"{what} must be 1–200 printable characters without spaces", param="name")
    return cleaned


def validate_model_id(model: str) -> None:
    provider, _, upstream = (model or "").partition("/")
    if not provider or not upstream:
        raise InvalidRequest(f"a model id is PROVIDER/MODEL, got {model!r}", param="model")


def _snapshots_due(objs: Sequence[Any]) -> list[Account]:
    """The accounts among ``objs`` whose pending events pass a snapshot interval."""
    return [obj for obj in objs if isinstance(obj, Account) and _snapshot_due(obj)]


def _snapshot_due(account: Account) -> bool:
    """True when the pending events carry the account past a multiple of the interval."""
    pending = len(account.pending_events)
    return (
        pending > 0
        and account.version // ACCOUNT_SNAPSHOT_INTERVAL > (account.version - pending) // ACCOUNT_SNAPSHOT_INTERVAL
    )


def _is_missing_table(exc: BaseException) -> bool:
    """SQLite's "no such table" or PostgreSQL's "relation … does not exist"."""
    text = str(exc).lower()
    return "no such table" in text or ("relation" in text and "does not exist" in text)
