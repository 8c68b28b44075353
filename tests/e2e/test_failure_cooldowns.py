"""Through the real server and the openai SDK: one provider failure hurts only the request
it failed (the next tenant's request is served), a burst of failures cools the provider's
credential and the callers then hear 503 ``upstream_unavailable`` with ``Retry-After``,
never a 429 nobody was sent; in server mode, the serve processes share cooldowns."""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from tests.conftest import PgSchemas
from tests.e2e.test_server_mode import server_env
from tests.fakes.openai_scripts import Scripted
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import Gateway, cli

KEY = "sk-only-credential-0000aaaa"
MESSAGES = [{"role": "user", "content": "hello"}]


@dataclass
class Setup:
    gateway: Gateway
    upstream: FakeOpenAIUpstream
    keys: dict[str, str]

    def client(self, tenant: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.url + "/v1", api_key=self.keys[tenant], max_retries=0)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    upstream = FakeOpenAIUpstream(api_key=KEY).start()
    gateway = Gateway.initialised(tmp_path)
    env = gateway.env
    cli(
        env,
        "providers",
        "add",
        "solo",
        "--kind",
        "openai-compatible",
        "--base-url",
        upstream.base_url,
        "--api-key-stdin",
        stdin=KEY,
    )
    cli(env, "prices", "set", "solo/gpt-4o", "--input", "10", "--output", "30")
    keys = {}
    for tenant in ("acme", "globex"):
        cli(env, "accounts", "create", tenant, "--starter-credits", "100")
        keys[tenant] = cli(env, "keys", "issue", tenant)["key"]
    gateway.start()
    yield Setup(gateway, upstream, keys)
    gateway.stop()
    upstream.stop()


def test_one_500_fails_only_its_own_request_and_the_next_tenant_is_served(setup: Setup) -> None:
    setup.upstream.script(Scripted.error(500, "boom"))
    with pytest.raises(openai.InternalServerError) as caught:
        setup.client("acme").chat.completions.create(model="solo/gpt-4o", messages=MESSAGES)
    assert caught.value.status_code == 502 and caught.value.code == "upstream_error"
    served = setup.client("globex").chat.completions.create(model="solo/gpt-4o", messages=MESSAGES)
    assert served.choices[0].message.content
    assert len(setup.upstream.requests) == 2  # the only credential was tried again at once


def test_a_burst_of_failures_is_answered_503_upstream_unavailable_with_retry_after(setup: Setup) -> None:
    setup.upstream.script(*[Scripted.error(500, "down")] * 3)
    for tenant in ("acme", "globex", "acme"):
        with pytest.raises(openai.InternalServerError):
            setup.client(tenant).chat.completions.create(model="solo/gpt-4o", messages=MESSAGES)
    with pytest.raises(openai.APIStatusError) as caught:
        setup.client("globex").chat.completions.create(model="solo/gpt-4o", messages=MESSAGES)
    error = caught.value
    assert (error.status_code, error.code) == (503, "upstream_unavailable")
    assert 1 <= int(error.response.headers["retry-after"]) <= 5
    assert error.body["type"] == "upstream_error" and error.body["param"] is None and error.body["message"]
    assert len(setup.upstream.requests) == 3  # the cooling credential was not called
    for tenant in ("acme", "globex"):
        assert setup.gateway.balance(tenant)["held"] == 0


@pytest.mark.postgres
@pytest.mark.redis
def test_in_server_mode_a_burst_seen_by_one_serve_cools_the_credential_for_another(
    tmp_path: Path, pg_schemas: PgSchemas
) -> None:
    """Two ``serve`` processes on one PostgreSQL and Redis: the failures reach the provider
    through the first only; the second, which never saw one, answers 503 once it hears of
    the cooldown (until then its requests are served: it has no failure of its own)."""
    upstream = FakeOpenAIUpstream(api_key=KEY).start()
    gateway = Gateway.initialised(tmp_path, pg_schemas.new_url(), **server_env())
    try:
        api_key = configure(gateway, upstream)
        gateway.start().start()
        first = openai.OpenAI(base_url=gateway.url_of(0) + "/v1", api_key=api_key, max_retries=0)
        second = openai.OpenAI(base_url=gateway.url_of(1) + "/v1", api_key=api_key, max_retries=0)
        upstream.script(*[Scripted.error(500, "down")] * 3)
        for _ in range(3):
            with pytest.raises(openai.InternalServerError):
                first.chat.completions.create(model="solo/gpt-4o", messages=MESSAGES)

        def second_refuses() -> openai.APIStatusError | None:
            try:
                second.chat.completions.create(model="solo/gpt-4o", messages=MESSAGES)
            except openai.APIStatusError as error:
                return error
            return None

        deadline = time.monotonic() + 10
        while (refused := second_refuses()) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert refused is not None, "the second serve never heard of the cooldown"
        assert (refused.status_code, refused.code) == (503, "upstream_unavailable")
        assert 1 <= int(refused.response.headers["retry-after"]) <= 5
    finally:
        gateway.stop()
        upstream.stop()


def configure(gateway: Gateway, upstream: FakeOpenAIUpstream) -> str:
    env = gateway.env
    cli(
        env,
        "providers",
        "add",
        "solo",
        "--kind",
        "openai-compatible",
        "--base-url",
        upstream.base_url,
        "--api-key-stdin",
        stdin=KEY,
    )
    cli(env, "prices", "set", "solo/gpt-4o", "--input", "10", "--output", "30")
    cli(env, "accounts", "create", "acme", "--starter-credits", "100")
    return cli(env, "keys", "issue", "acme")["key"]
