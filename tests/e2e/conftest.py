"""A gateway per store (SQLite, PostgreSQL) set up the way the README tells an operator
to: every step through the ``tallyhub`` CLI, the provider secret on stdin."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PgSchemas
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import Gateway, cli

UPSTREAM_KEY = "sk-upstream-e2e-secret-7d41c9"
MODEL = "openai/gpt-4o-mini"
INPUT_RATE = 2_000  # nanocredits per input token (2 credits per 1M)
OUTPUT_RATE = 8_000  # nanocredits per output token (8 credits per 1M)


@dataclass
class Served:
    gateway: Gateway
    upstream: FakeOpenAIUpstream
    api_key: str
    account: str


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIUpstream]:
    fake = FakeOpenAIUpstream(api_key=UPSTREAM_KEY).start()
    yield fake
    fake.stop()


def configure(gateway: Gateway, upstream: FakeOpenAIUpstream, account: str, credits: str) -> str:
    """The README's operator steps; returns the user API key."""
    env = gateway.env
    cli(
        env,
        "providers",
        "add",
        "openai",
        "--kind",
        "openai",
        "--base-url",
        upstream.base_url,
        "--api-key-stdin",
        stdin=UPSTREAM_KEY + "\n",
    )
    cli(env, "prices", "set", MODEL, "--input", "2", "--output", "8")
    cli(env, "accounts", "create", account)
    cli(env, "credits", "grant", account, credits, "--reason", "e2e")
    return cli(env, "keys", "issue", account, "--name", "e2e")["key"]


def configured_gateway(
    tmp_path_factory: pytest.TempPathFactory, name: str, credits: str
) -> Iterator[tuple[Gateway, FakeOpenAIUpstream, str]]:
    """For a module fixture: a fake upstream of its own and an embedded gateway configured by
    the README's steps (account ``acme`` with ``credits``), as (gateway, upstream, user key);
    both stopped when the fixture ends."""
    upstream = FakeOpenAIUpstream(api_key=UPSTREAM_KEY).start()
    gateway = Gateway.initialised(tmp_path_factory.mktemp(name))
    key = configure(gateway, upstream, "acme", credits)
    gateway.start()
    yield gateway, upstream, key
    gateway.stop()
    upstream.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(
    request: pytest.FixtureRequest,
    upstream: FakeOpenAIUpstream,
    tmp_path_factory: pytest.TempPathFactory,
    pg_schemas: PgSchemas,
) -> Iterator[Served]:
    data_dir: Path = tmp_path_factory.mktemp(f"data-{request.param}")
    database_url = pg_schemas.new_url() if request.param == "postgres" else None
    gateway = Gateway.initialised(data_dir, database_url)
    api_key = configure(gateway, upstream, "acme", "100")
    gateway.start()
    yield Served(gateway=gateway, upstream=upstream, api_key=api_key, account="acme")
    gateway.stop()
