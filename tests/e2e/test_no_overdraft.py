"""An account funded for exactly N worst-case requests receives many more at once:
exactly N succeed, the rest get 402, and the balance ends at exactly grant − recorded
charges, never below zero — with one ``serve`` on SQLite (10 of 50), two ``serve``
processes sharing PostgreSQL (10 of 50), and four (20 of 200)."""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from domain.money import format_credits
from tests.conftest import PgSchemas
from tests.e2e.conftest import INPUT_RATE, MODEL, OUTPUT_RATE, UPSTREAM_KEY, configure
from tests.fakes.openai_scripts import Scripted
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import Gateway

MAX_TOKENS = 50
BODY = orjson.dumps(
    {"model": MODEL, "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": "count to ten"}]}
)
# The hold: body bytes bound the prompt tokens, each held at the dearest input class (a 1-hour
# cache write, 2 x input by default); an answer reporting twice the body's bytes as prompt
# tokens (within what a provider may add to a prompt) costs exactly that.
WORST_PROMPT = 2 * len(BODY)
WORST_CASE = WORST_PROMPT * INPUT_RATE + MAX_TOKENS * OUTPUT_RATE


@pytest.fixture
def upstream() -> Iterator[FakeOpenAIUpstream]:
    fake = FakeOpenAIUpstream(api_key=UPSTREAM_KEY).start()
    # Every answer uses exactly the worst case, so no success can make room for an eleventh.
    fake.script(
        *[Scripted.usage(prompt_tokens=WORST_PROMPT, completion_tokens=MAX_TOKENS) | Scripted.delay(0.05)] * 200
    )
    yield fake
    fake.stop()


async def fire(urls: list[str], key: str, count: int) -> list[httpx.Response]:
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        calls = [
            client.post(urls[i % len(urls)] + "/v1/chat/completions", content=BODY, headers=headers)
            for i in range(count)
        ]
        return await asyncio.gather(*calls)


def check_outcome(gateway: Gateway, responses: list[httpx.Response], funded: int = 10) -> None:
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * funded + [402] * (len(responses) - funded), statuses
    for refused in (r for r in responses if r.status_code == 402):
        assert refused.json()["error"]["code"] == "insufficient_credits"
    charges = sum(int(r.headers["x-tallyhub-charge-nanocredits"]) for r in responses if r.status_code == 200)
    balance = gateway.balance("acme")
    assert charges == funded * WORST_CASE
    assert balance["balance"] == funded * WORST_CASE - charges == 0
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
@pytest.mark.parametrize(("processes", "requests", "funded"), [(2, 50, 10), (4, 200, 20)])
def test_serve_processes_sharing_postgres_never_overdraw(
    tmp_path: Path, upstream: FakeOpenAIUpstream, pg_schemas: PgSchemas, processes: int, requests: int, funded: int
) -> None:
    gateway = Gateway.initialised(tmp_path, pg_schemas.new_url())
    key = configure(gateway, upstream, "acme", format_credits(funded * WORST_CASE))
    for _ in range(processes):
        gateway.start()
    try:
        urls = [gateway.url_of(i) for i in range(processes)]
        check_outcome(gateway, asyncio.run(fire(urls, key, requests)), funded)
    finally:
        gateway.stop()
