"""Credential health shared through the real Redis on 127.0.0.1:6379 by two (or three)
``CredentialHealth`` views, as two ``serve`` processes would hold them: failures counted
by both trip one cooldown that both apply, a 429 one of them saw cools the credential for
the other, a process that starts late learns the cooldowns in force, and with Redis down
a process decides on its own counts and says so once. Every key prefix is this test's."""

import logging
import secrets
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.health_redis import RedisHealthSync
from application.health import FAILING, RATE_LIMITED, CredentialHealth
from tests.support.gateway import free_port

pytestmark = pytest.mark.redis

REDIS_URL = "redis://127.0.0.1:6379/0"


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def prefix() -> Iterator[str]:
    prefix = f"th-test-{secrets.token_hex(6)}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


@pytest.fixture
def processes(prefix: str) -> Iterator[Callable[..., CredentialHealth]]:
    syncs: list[RedisHealthSync] = []

    def start(flush_seconds: float = 0.25) -> CredentialHealth:
        health = CredentialHealth()
        sync = RedisHealthSync(REDIS_URL, prefix, health, flush_seconds=flush_seconds, retry_seconds=0.1).start()
        syncs.append(sync)
        assert sync.subscribed.wait(5) and wait_for(lambda: sync.shared)
        return health

    yield start
    for sync in syncs:
        sync.close()


def test_failures_counted_by_two_processes_trip_one_cooldown_both_apply(processes) -> None:
    first, second = processes(), processes()
    first.record_failure("cred-a")
    second.record_failure("cred-a")
    assert first.cooldown("cred-a") is None and second.cooldown("cred-a") is None  # two failures: no trip
    first.record_failure("cred-a")  # the third, counted with the other process's
    assert wait_for(lambda: second.cooldown("cred-a") is not None)
    assert wait_for(lambda: first.cooldown("cred-a") is not None)
    for health in (first, second):
        cooldown = health.cooldown("cred-a")
        assert cooldown.reason == FAILING and 4 < cooldown.seconds <= 5
    assert second.cooldown("cred-b") is None


def test_successes_counted_anywhere_keep_a_few_failures_from_tripping(processes) -> None:
    first, second = processes(), processes(flush_seconds=60)  # the second sends only when told
    for _ in range(10):
        second.record_success("cred-a")
    second.sync.flush()  # the successes are in Redis before the failures arrive
    for _ in range(4):
        first.record_failure("cred-a")
    first.sync.flush()
    assert first.cooldown("cred-a") is None and second.cooldown("cred-a") is None  # 4 failures in 14 attempts


def test_a_429_one_process_saw_cools_the_credential_for_the_other(processes) -> None:
    first, second = processes(), processes()
    first.rate_limited("cred-a", 20)
    assert wait_for(lambda: second.cooldown("cred-a") is not None)
    cooldown = second.cooldown("cred-a")
    assert cooldown.reason == RATE_LIMITED and 19 < cooldown.seconds <= 20


def test_a_process_that_starts_late_learns_the_cooldowns_in_force(processes) -> None:
    first = processes()
    first.rate_limited("cred-a", 30)
    for _ in range(3):
        first.record_failure("cred-b")
    assert wait_for(lambda: first.cooldown("cred-b") is not None)
    first.sync.flush()
    late = processes()  # subscribed: it has read what was in force
    assert late.cooldown("cred-a").reason == RATE_LIMITED
    assert late.cooldown("cred-b").reason == FAILING


def test_with_redis_down_a_process_decides_on_its_own_counts_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    health = CredentialHealth()
    sync = RedisHealthSync(closed, "th-test-down", health, flush_seconds=0.01, retry_seconds=0.05)
    with caplog.at_level(logging.WARNING, logger="tallyhub.health"):
        sync.start()
        try:
            for _ in range(3):
                health.record_failure("cred-a")
                sync.flush()
            assert not sync.shared
            assert health.cooldown("cred-a").reason == FAILING  # decided here, on this process's counts
        finally:
            sync.close()
    sharing = [r for r in caplog.records if "share credential health" in r.getMessage()]
    assert len(sharing) == 1


@settings(max_examples=40, deadline=None)
@given(outcomes=st.lists(st.booleans(), min_size=1, max_size=40))  # True: a failure
def test_redis_trips_exactly_when_this_process_would_on_the_same_counts(outcomes: list[bool]) -> None:
    """The policy is written twice (Python here, Lua in Redis): on any sequence of
    attempts, both cool the credential at the same attempt."""
    prefix = f"th-test-{secrets.token_hex(6)}"
    local, shared = CredentialHealth(), CredentialHealth()
    sync = RedisHealthSync(REDIS_URL, prefix, shared)  # not started: flushed by hand, after each attempt
    try:
        for failed in outcomes:
            for health in (local, shared):
                (health.record_failure if failed else health.record_success)("cred-a")
            sync.flush()
            assert sync.shared
            assert (shared.cooldown("cred-a") is None) == (local.cooldown("cred-a") is None)
    finally:
        sync.close()
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
        client.close()
