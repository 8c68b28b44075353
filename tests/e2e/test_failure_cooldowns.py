"""Through the real server and the openai SDK: one provider failure hurts only the request
it failed (the next tenant's request is served), a burst of failures cools the provider's
credential and the callers then hear 503 ``upstream_unavailable`` with ``Retry-After``,
never a 429 nobody was sent."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

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
    cli(env, "providers", "add", "solo", "--kind", "openai-compatible", "--base-url", upstream.base_url,
        "--api-key-stdin", stdin=KEY)
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
