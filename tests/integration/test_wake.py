"""Server mode's wake-up through the real Redis on 127.0.0.1:6379: the hot path only sets a
flag, the publisher sends a few PUBLISH per second at most however many commits there
are, the first at once and the last before it closes, and a Redis that is down costs a
request nothing. Every channel is unique to this test run."""

import os
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from adapters.crypto.aes_gcm import AesGcmKeyVault
from adapters.crypto.key_digest import HmacApiKeyScheme
from adapters.settings import Settings, SettingsError
from adapters.workers.wake import RedisCommitPublisher, RedisWakeListener, wake_channel
from application.accounts import Accounts
from application.ledger import Ledger
from tests.support.gateway import free_port

pytestmark = pytest.mark.redis

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def channel() -> str:
    return wake_channel(f"th-test-{secrets.token_hex(6)}")


class Received:
    """A subscriber on the channel, recording when each message arrived."""

    def __init__(self, channel: str) -> None:
        self.times: list[float] = []
        self._stop = threading.Event()
        self._listener = RedisWakeListener(REDIS_URL, channel, self._woken, retry_seconds=0.05)
        self._first = True
        self._thread = threading.Thread(target=self._listener.run, args=(self._stop,), daemon=True)

    def _woken(self) -> None:
        if self._first:  # the listener's own wake-up after subscribing, not a message
            self._first = False
            return
        self.times.append(time.monotonic())

    def __enter__(self) -> "Received":
        self._thread.start()
        assert self._listener.subscribed.wait(5), "could not subscribe"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def wait_for(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.times) < count and time.monotonic() < deadline:
            time.sleep(0.005)


@pytest.fixture
def publisher(channel: str) -> Iterator[RedisCommitPublisher]:
    publisher = RedisCommitPublisher(REDIS_URL, channel).start()
    yield publisher
    publisher.close()


def test_a_burst_of_commits_becomes_a_few_publishes_the_first_at_once(
    channel: str, publisher: RedisCommitPublisher
) -> None:
    with Received(channel) as received:
        first = time.monotonic()
        publisher.notify()
        received.wait_for(1)
        assert received.times and received.times[0] - first < 0.1, "the first commit was not announced at once"
        started = time.monotonic()
        while time.monotonic() - started < 1.0:  # ~100k commits in one second
            for _ in range(1000):
                publisher.notify()
            time.sleep(0.01)
        time.sleep(publisher.min_interval + 0.1)
        received.wait_for(2)
    # one per 0.2 s window at most, plus the trailing one for the burst's end
    assert 2 <= publisher.published <= 1 + 1.0 / publisher.min_interval + 2, publisher.published
    assert len(received.times) == publisher.published


def test_the_hot_path_pays_a_flag_not_a_round_trip(publisher: RedisCommitPublisher) -> None:
    count = 100_000
    started = time.perf_counter()
    for _ in range(count):
        publisher.notify()
    per_call = (time.perf_counter() - started) / count
    assert per_call < 20e-6, f"notify() took {per_call * 1e6:.1f} µs"  # a PUBLISH round trip is ~100 µs


def test_close_announces_the_last_commit_before_the_process_goes(channel: str) -> None:
    with Received(channel) as received:
        publisher = RedisCommitPublisher(REDIS_URL, channel, min_interval=10.0).start()
        publisher.notify()
        received.wait_for(1)
        publisher.notify()  # inside the 10 s quiet window: only close() can announce it
        publisher.close()
        received.wait_for(2)
    assert len(received.times) == 2


def test_close_without_commits_publishes_nothing(channel: str) -> None:
    with Received(channel) as received:
        RedisCommitPublisher(REDIS_URL, channel).start().close()
        time.sleep(0.2)
    assert received.times == []


def test_redis_down_costs_notify_nothing_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    publisher = RedisCommitPublisher(closed, "th-test-nowhere", min_interval=0.01).start()
    try:
        started = time.perf_counter()
        deadline = time.monotonic() + 0.5
        calls = 0
        while time.monotonic() < deadline:
            publisher.notify()
            calls += 1
            time.sleep(0.001)
        assert publisher.failures >= 3
    finally:
        publisher.close()
    assert publisher.published == 0
    warnings = [r for r in caplog.records if r.name == "tallyhub.wake" and "cannot wake" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert calls > 100 and time.perf_counter() - started < 2.0


def test_the_listener_resubscribes_after_losing_its_connection(channel: str) -> None:
    wakes: list[float] = []
    stop = threading.Event()
    listener = RedisWakeListener(REDIS_URL, channel, lambda: wakes.append(time.monotonic()), retry_seconds=0.05)
    thread = threading.Thread(target=listener.run, args=(stop,), daemon=True)
    thread.start()
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert listener.subscribed.wait(5)
        ours = [c for c in client.client_list() if c["name"] == f"tallyhub-worker:{channel}"]
        assert len(ours) == 1, ours
        client.client_kill_filter(_id=ours[0]["id"])  # only this test's connection
        deadline = time.monotonic() + 5
        while len(wakes) < 3 and time.monotonic() < deadline:
            client.publish(channel, b"")
            time.sleep(0.05)
        assert len(wakes) >= 3, "no wake-up after the connection was killed"
        assert [c for c in client.client_list() if c["name"] == f"tallyhub-worker:{channel}"], "not resubscribed"
    finally:
        stop.set()
        thread.join(5)
        client.close()


def test_the_ledger_calls_on_commit_once_per_group_commit_batch() -> None:
    commits: list[int] = []
    ledger = Ledger(
        {"PERSISTENCE_MODULE": "eventsourcing.popo"},
        vault=AesGcmKeyVault(os.urandom(32)),
        key_scheme_factory=HmacApiKeyScheme,
        on_commit=lambda: commits.append(1),
    )
    ledger.initialise()
    account = Accounts(ledger).create_account("acme")
    commits.clear()
    ledger.start_group_commit()
    try:
        with ThreadPoolExecutor(32) as pool:
            list(
                pool.map(
                    lambda i: Accounts(ledger).grant_credits(account.id, 1, reason=f"g{i}", idempotency_key=f"k{i}"),
                    range(200),
                )
            )
    finally:
        ledger.stop_group_commit()
    assert ledger.writer is not None and ledger.writer.batches < 200  # it did batch
    assert len(commits) == ledger.writer.batches


def test_server_mode_needs_both_postgres_and_redis() -> None:
    pg = "postgresql://postgres@127.0.0.1:5432/test"
    assert Settings.from_env({"TALLYHUB_DATABASE_URL": pg, "TALLYHUB_REDIS_URL": REDIS_URL}).server_mode
    assert not Settings.from_env({"TALLYHUB_DATABASE_URL": pg}).server_mode
    assert not Settings.from_env({"TALLYHUB_REDIS_URL": REDIS_URL}).server_mode  # SQLite: embedded, Redis or not
    assert Settings.from_env({"TALLYHUB_REDIS_PREFIX": "th-test:a.b_c"}).redis_prefix == "th-test:a.b_c"
    with pytest.raises(SettingsError, match="TALLYHUB_REDIS_PREFIX"):
        Settings.from_env({"TALLYHUB_REDIS_PREFIX": "a b"})
