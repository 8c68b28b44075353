"""An account funded for exactly ten worst-case requests receives fifty at once: ten
succeed, forty get 402, and the balance ends at exactly grant − recorded charges,
never below zero — with one ``serve`` on SQLite, and with two ``serve`` processes
sharing PostgreSQL."""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from domain.money import format_credits
from tests.conftest import PgSchemas
from tests.e2e.conftest import INPUT_RATE, MODEL, OUTPUT_RATE, configure
from tests.fakes.openai_scripts import Scripted
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.e2e.conftest import UPSTREAM_KEY
from tests.support.gateway import Gateway

MAX_TOKENS = 50
BODY = orjson.dumps({"model": MODEL, "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": "count to ten"}]})
WORST_CASE = len(BODY) * INPUT_RATE + MAX_TOKENS * OUTPUT_RATE  # the hold: body bytes bound the prompt tokens


@pytest.fixture
def upstream() -> Iterator[FakeOpenAIUpstream]:
    fake = FakeOpenAIUpstream(api_key=UPSTREAM_KEY).start()
    # Every answer uses exactly the worst case, so no success can make room for an eleventh.
    fake.script(*[Scripted.usage(prompt_tokens=len(BODY), completion_tokens=MAX_TOKENS) | Scripted.delay(0.05)] * 50)
    yield fake
    fake.stop()


async def fire(urls: list[str], key: str, count: int) -> list[httpx.Response]:
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        calls = [client.post(urls[i % len(urls)] + "/v1/chat/completions", content=BODY, headers=headers) for i in range(count)]
        return await asyncio.gather(*calls)


def check_outcome(gateway: Gateway, responses: list[httpx.Response]) -> None:
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 10 + [402] * 40, statuses
    for refused in (r for r in responses if r.status_code == 402):
        assert refused.json()["error"]["code"] == "insufficient_credits"
    charges = sum(int(r.headers["x-tallyhub-charge-nanocredits"]) for r in responses if r.status_code == 200)
    balance = gateway.balance("acme")
    assert charges == 10 * WORST_CASE
    assert balance["balance"] == 10 * WORST_CASE - charges == 0
    assert balance["held"] == 0 and balance["available"] == 0


def test_fifty_concurrent_requests_on_sqlite_never_overdraw(tmp_path: Path, upstream: FakeOpenAIUpstream) -> None:
    gateway = Gateway.initialised(tmp_path)
    key = configure(gateway, upstream, "acme", format_credits(10 * WORST_CASE))
    gateway.start()
    try:
        check_outcome(gateway, asyncio.run(fire([gateway.url], key, 50)))
    finally:
        gateway.stop()


@pytest.mark.postgres
def test_two_serve_processes_sharing_postgres_never_overdraw(tmp_path: Path, upstream: FakeOpenAIUpstream,
                                                             pg_schemas: PgSchemas) -> None:
    gateway = Gateway.initialised(tmp_path, pg_schemas.new_url())
    key = configure(gateway, upstream, "acme", format_credits(10 * WORST_CASE))
    gateway.start()
    gateway.start()
    try:
        check_outcome(gateway, asyncio.run(fire([gateway.url_of(0), gateway.url_of(1)], key, 50)))
    finally:
        gateway.stop()
