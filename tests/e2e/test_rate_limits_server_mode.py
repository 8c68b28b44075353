"""Rate limits in server mode (PostgreSQL and Redis), through real ``serve`` processes: a key's
RPM holds exactly across two processes (a 5 RPM key gets 5 requests, not 10), and with the
Redis they share stopped, requests are still served (limits open), which the process logs
once; once Redis is back, the limit holds again. The outage runs on a redis-server of the
test's own; every gateway has a schema and a Redis prefix of its own."""

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PgSchemas
from tests.e2e.conftest import MODEL, configure
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import Gateway, cli
from tests.support.own_redis import OwnRedis

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SHARED_REDIS = "redis://127.0.0.1:6379/0"
BODY = orjson.dumps({"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "hello"}]})
RPM = 5


def limited_gateway(tmp_path: Path, upstream: FakeOpenAIUpstream, url: str, redis_url: str) -> tuple[Gateway, str]:
    """A server-mode gateway (not started) whose user key has ``RPM`` requests a minute."""
    prefix = f"th-test-{secrets.token_hex(6)}"
    gateway = Gateway.initialised(tmp_path, url, TALLYHUB_REDIS_URL=redis_url, TALLYHUB_REDIS_PREFIX=prefix)
    configure(gateway, upstream, "acme", "1000")
    issued = cli(gateway.env, "keys", "issue", "acme", "--name", "limited")
    shown = cli(gateway.env, "keys", "limits", issued["id"], "--rpm", str(RPM))
    assert shown["rpm"] == RPM
    return gateway, issued["key"]


async def _post(urls: list[str], key: str, count: int) -> list[httpx.Response]:
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    async with httpx.AsyncClient(timeout=30) as client:
        return await asyncio.gather(
            *[
                client.post(f"{urls[i % len(urls)]}/v1/chat/completions", content=BODY, headers=headers)
                for i in range(count)
            ]
        )


def post(urls: list[str], key: str, count: int) -> list[httpx.Response]:
    return asyncio.run(_post(urls, key, count))


def failed_open(gateway: Gateway) -> float:
    """``tallyhub_rate_limit_failed_open_total`` as the gateway's /metrics shows it."""
    page = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
        if sample.name == "tallyhub_rate_limit_failed_open_total"
    )


def statuses(responses: list[httpx.Response]) -> list[int]:
    return sorted(response.status_code for response in responses)


@pytest.fixture
def gateways() -> Iterator[list[Gateway]]:
    started: list[Gateway] = []
    yield started
    for gateway in started:
        gateway.stop()


def test_a_key_limit_holds_exactly_across_two_serve_processes(
    tmp_path: Path, upstream: FakeOpenAIUpstream, pg_schemas: PgSchemas, gateways: list[Gateway]
) -> None:
    gateway, key = limited_gateway(tmp_path, upstream, pg_schemas.new_url(), SHARED_REDIS)
    gateways.append(gateway)
    gateway.start().start()
    responses = post([gateway.url_of(0), gateway.url_of(1)], key, 4 * RPM)
    warnings = [line for line in gateway.logs().splitlines() if "tallyhub.limits" in line]
    assert statuses(responses) == [200] * RPM + [429] * (3 * RPM), warnings
    refused = [response for response in responses if response.status_code == 429]
    assert all(response.json()["error"]["code"] == "rate_limit_exceeded" for response in refused)
    assert all(int(response.headers["retry-after"]) >= 1 for response in refused)
    assert all(response.headers["x-ratelimit-limit-requests"] == str(RPM) for response in responses)
    assert {response.headers["x-ratelimit-remaining-requests"] for response in refused} == {"0"}
    # each process refused some: alone, each would have served 5 of its 10 (10 in all)
    assert {response.url.port for response in refused} == set(gateway.ports)


def test_with_redis_stopped_requests_are_served_and_the_limit_holds_again_once_it_is_back(
    tmp_path: Path, upstream: FakeOpenAIUpstream, pg_schemas: PgSchemas, gateways: list[Gateway]
) -> None:
    own = OwnRedis()
    try:
        own.start()
        gateway, key = limited_gateway(tmp_path, upstream, pg_schemas.new_url(), own.url)
        gateways.append(gateway)
        gateway.start()
        assert statuses(post([gateway.url], key, RPM + 2)) == [200] * RPM + [429] * 2
        assert failed_open(gateway) == 0
        own.stop()
        assert statuses(post([gateway.url], key, RPM)) == [200] * RPM  # limits open: nothing refused
        assert failed_open(gateway) == RPM  # each admitted without limits, counted in the metrics
        own.start()  # an empty Redis on the same port
        # the limiter tries Redis again at most once a second: requests until the limit refuses again
        seen: list[int] = []
        while 429 not in seen and len(seen) < 200:
            seen += statuses(post([gateway.url], key, 1))
        assert 429 in seen
        # one warning for the outage, and one INFO line when Redis answers again
        logs = gateway.logs()
        assert logs.count("WARNING tallyhub.limits: rate limits: Redis unreachable") == 1, logs
        assert logs.count("INFO tallyhub.limits: rate limits: Redis answers again") == 1, logs
    finally:
        for started in gateways:
            started.stop()
        own.stop()
