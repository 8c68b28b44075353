"""bootstrap.build_rate_limiter: server mode (PostgreSQL and TALLYHUB_REDIS_URL) shares the
rate limits of every ``serve`` through Redis; embedded mode (SQLite, with or without a Redis
URL) keeps them in the process."""

from pathlib import Path

from adapters.bootstrap import build_rate_limiter
from adapters.rate_limits_redis import RedisRateLimiter
from adapters.settings import Settings
from application.rate_limits import InProcessRateLimiter

REDIS_URL = "redis://127.0.0.1:6379/0"


def test_server_mode_shares_limits_through_redis_and_embedded_mode_keeps_them_in_process(tmp_path: Path) -> None:
    server = Settings(
        data_dir=tmp_path,
        database_url="postgresql://tallyhub@127.0.0.1:5432/tallyhub",
        redis_url=REDIS_URL,
        redis_prefix="th-test-wiring",
        hold_ttl_seconds=120,
    )
    shared = build_rate_limiter(server)
    assert isinstance(shared, RedisRateLimiter) and shared.hold_ttl_seconds == 120
    assert isinstance(build_rate_limiter(Settings(data_dir=tmp_path, redis_url=REDIS_URL)), InProcessRateLimiter)
    assert isinstance(build_rate_limiter(Settings(data_dir=tmp_path)), InProcessRateLimiter)
