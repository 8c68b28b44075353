"""Servers a reliability test may stop and start: a PostgreSQL and a Redis of its own
(tests/reliability/private_servers.py), skipped with the reason where they cannot run."""

from collections.abc import Iterator

import pytest

from tests.reliability.private_servers import PrivatePostgres, PrivateRedis, postgres_available, redis_available


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    reason = postgres_available()
    if reason:
        pytest.skip(reason)
    pg = PrivatePostgres().start()
    try:
        yield pg
    finally:
        pg.close()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    reason = redis_available()
    if reason:
        pytest.skip(reason)
    redis = PrivateRedis().start()
    try:
        yield redis
    finally:
        redis.close()
