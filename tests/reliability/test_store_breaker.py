"""PostgreSQL unreachable is answered promptly (docs/reliability.md, finding 2): a store call
gives up after ``TALLYHUB_STORE_TIMEOUT_SECONDS``, the calls after it fail at once while the
server stays away (the breaker), and the store is used again by itself once it is back —
proved on the event store's recorder against a PostgreSQL of the test's own."""

import threading
import time
from pathlib import Path

import pytest
from eventsourcing.persistence import InfrastructureFactory, OperationalError
from eventsourcing.utils import Environment

from adapters.persistence.postgres_recorder import BatchedPostgresApplicationRecorder, StoreBreaker
from adapters.settings import Settings, SettingsError
from tests.reliability.harness import wait_until
from tests.reliability.private_servers import PrivatePostgres

STORE_TIMEOUT = 2


def test_the_store_timeout_is_the_pools_wait_and_is_bounded() -> None:
    assert Settings.from_env({}).store_timeout_seconds == 5
    settings = Settings.from_env(
        {"TALLYHUB_STORE_TIMEOUT_SECONDS": "3", "TALLYHUB_DATABASE_URL": "postgresql://u@h/db?schema=s"}
    )
    assert settings.database.eventsourcing_env(create_tables=False)["POSTGRES_CONNECT_TIMEOUT"] == "3"
    for bad in ("0", "61", "2.5", "soon"):
        with pytest.raises(SettingsError, match="TALLYHUB_STORE_TIMEOUT_SECONDS"):
            Settings.from_env({"TALLYHUB_STORE_TIMEOUT_SECONDS": bad})


def test_an_open_breaker_fails_calls_at_once_until_its_probe_reaches_the_store() -> None:
    reachable = threading.Event()
    probes = []

    def probe() -> None:
        probes.append(1)
        if not reachable.is_set():
            raise OperationalError("connection refused")

    breaker = StoreBreaker(probe, connects=reachable.is_set, closed=lambda: False)
    breaker.check()  # closed: calls go through
    breaker.trip(OperationalError("couldn't get a connection after 2.00 sec"))
    wait_until(lambda: breaker.open, 10, "the breaker open: the server takes no connection")
    with pytest.raises(OperationalError, match="unreachable"):
        breaker.check()
    wait_until(lambda: len(probes) >= 2, 10, "the probe trying again")
    assert breaker.open
    reachable.set()
    wait_until(lambda: not breaker.open, 10, "the breaker closed by a probe that reached the store")
    breaker.check()


def test_a_busy_pool_does_not_open_the_breaker_while_the_server_takes_connections() -> None:
    checked = threading.Event()

    def connects() -> bool:
        checked.set()
        return True

    breaker = StoreBreaker(lambda: None, connects=connects, closed=lambda: False)
    breaker.trip(OperationalError("couldn't get a connection after 2.00 sec"))
    wait_until(checked.is_set, 10, "the server checked")
    wait_until(lambda: not breaker._checking, 10, "the check finished")
    assert not breaker.open
    breaker.check()


def test_postgresql_away_fails_a_call_within_the_store_timeout_then_at_once_and_recovers_by_itself(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url=private_postgres.url("public"),
        store_timeout_seconds=STORE_TIMEOUT,
    )
    factory = InfrastructureFactory.construct(Environment(env=settings.database.eventsourcing_env(create_tables=True)))
    recorder = factory.application_recorder()
    assert isinstance(recorder, BatchedPostgresApplicationRecorder)
    try:
        recorder.create_table()
        assert recorder.max_notification_id() is None
        private_postgres.stop("immediate")

        started = time.monotonic()
        with pytest.raises(OperationalError):
            recorder.max_notification_id()
        first = time.monotonic() - started
        wait_until(lambda: recorder.breaker.open, 10, "the breaker open: PostgreSQL takes no connection")
        started = time.monotonic()
        with pytest.raises(OperationalError, match="unreachable"):
            recorder.max_notification_id()
        second = time.monotonic() - started
        # eventsourcing alone: ten attempts of the pool's whole wait each, then the same again
        assert first < STORE_TIMEOUT + 2, first
        assert second < STORE_TIMEOUT / 2, second  # the breaker: no wait for a store known away

        private_postgres.start()

        def answers() -> bool:
            try:
                return recorder.max_notification_id() is None
            except OperationalError:
                return False

        wait_until(answers, 30, "the recorder answering again once PostgreSQL is back")
        assert not recorder.breaker.open
    finally:
        factory.close()
