"""What a rate limit costs a request in server mode: RedisRateLimiter.admit + settle against a
Redis (one key scope with RPM, TPM and max-parallel, one account scope with RPM; then a key
with RPM only), beside a bare PING on the same kind of client (the round trip itself) and the
in-process limiter.

    .venv/bin/python -m tests.benchmarks.limiter_redis [--url redis://127.0.0.1:6379/0] [-n 5000] [-c 1]

``-c`` runs that many admit+settle loops at once on one event loop (as concurrent requests
of one ``serve`` would); the figures are wall time and this process's CPU time per call (the
CPU figure is what a ``serve`` pays; the wall one includes Redis' own time). Keys are under a prefix of
this run's own, deleted at the end."""

import argparse
import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable

import redis
import redis.asyncio as aredis

from adapters.rate_limits_redis import REDIS_TIMEOUT_SECONDS, RedisRateLimiter
from adapters.redis_pipe import RedisPipe
from application.ports import LimitScope, RateLimiter
from application.rate_limits import InProcessRateLimiter
from domain.rate_limits import RateLimits

BIG = 10**12
SCOPES = [
    LimitScope("key:bench", RateLimits(rpm=BIG, tpm=BIG, max_parallel=10**6)),
    LimitScope("account:bench", RateLimits(rpm=BIG)),
]
RPM_ONLY = [LimitScope("key:bench-rpm", RateLimits(rpm=BIG))]


async def per_call_us(step: Callable[[], Awaitable[object]], count: int, concurrency: int) -> tuple[float, float]:
    async def loop(n: int) -> None:
        for _ in range(n):
            await step()

    for _ in range(200):  # warm up: connections, the script's sha
        await step()
    done = count // concurrency * concurrency
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(loop(count // concurrency) for _ in range(concurrency)))
    wall = (time.perf_counter() - started) / done * 1e6
    return wall, (time.process_time() - cpu) / done * 1e6  # this process's CPU: what a serve pays


def admit_and_settle(limiter: RateLimiter, scopes: list[LimitScope] = SCOPES) -> Callable[[], Awaitable[object]]:
    async def step() -> None:
        now = time.time()
        admission = await limiter.admit(scopes, 500, now)
        assert admission.admitted
        await limiter.settle(scopes, admission, 120, now)

    return step


async def main(url: str, count: int, concurrency: int) -> None:
    prefix = f"th-bench-{secrets.token_hex(4)}"
    limiter = RedisRateLimiter(url, prefix, hold_ttl_seconds=900)
    client = aredis.Redis.from_url(url)  # redis-py's asyncio client, as the limiter used before adapters/redis_pipe.py
    pipe = RedisPipe(url, timeout=REDIS_TIMEOUT_SECONDS)
    try:
        ping = await per_call_us(client.ping, count, concurrency)
        pipe_ping = await per_call_us(lambda: pipe.call("PING"), count, concurrency)
        shared = await per_call_us(admit_and_settle(limiter), count, concurrency)
        rpm_only = await per_call_us(admit_and_settle(limiter, RPM_ONLY), count, concurrency)
        local = await per_call_us(admit_and_settle(InProcessRateLimiter()), count, concurrency)
    finally:
        await limiter.aclose()
        await client.aclose()
        await pipe.aclose()
        sync = redis.Redis.from_url(url)
        for key in sync.scan_iter(f"{prefix}:*"):
            sync.delete(key)
        sync.close()
    print(f"n={count} c={concurrency}            wall us/call   client CPU us/call")
    for name, (wall, cpu) in (
        ("PING (redis-py asyncio)", ping),
        ("PING (adapters/redis_pipe)", pipe_ping),
        ("Redis admit+settle (2 EVALSHA)", shared),
        ("Redis admit+settle, RPM only", rpm_only),
        ("in-process admit+settle", local),
    ):
        print(f"{name:32} {wall:10.1f} {cpu:12.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("-c", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.n, args.c))
