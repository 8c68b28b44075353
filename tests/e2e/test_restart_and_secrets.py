"""What survives a restart (every balance), and what never reaches the disk (the
provider secret, user keys, the admin key)."""

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import PgSchemas
from tests.e2e.conftest import MODEL, UPSTREAM_KEY, configure
from tests.fakes.openai_scripts import Scripted
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import Gateway, cli

MESSAGES = [{"role": "user", "content": "remember me"}]


@pytest.fixture
def upstream() -> Iterator[FakeOpenAIUpstream]:
    fake = FakeOpenAIUpstream(api_key=UPSTREAM_KEY).start()
    yield fake
    fake.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, pg_schemas: PgSchemas) -> str | None:
    return pg_schemas.new_url() if request.param == "postgres" else None


def chat(gateway: Gateway, key: str, stream: bool = False) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    if stream:
        list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    else:
        client.chat.completions.create(model=MODEL, messages=MESSAGES)


def test_a_restarted_server_keeps_every_balance(
    tmp_path: Path, upstream: FakeOpenAIUpstream, database_url: str | None
) -> None:
    gateway = Gateway.initialised(tmp_path, database_url)
    key = configure(gateway, upstream, "acme", "5")
    cli(gateway.env, "accounts", "create", "globex", "--starter-credits", "3")
    gateway.start()
    try:
        for _ in range(3):
            chat(gateway, key)
        before = {name: gateway.balance(name) for name in ("acme", "globex")}
        gateway.stop()
        gateway.start()
        after = {name: gateway.balance(name) for name in ("acme", "globex")}
        assert after == before
        assert before["globex"]["balance"] == 3_000_000_000
        chat(gateway, key)  # and it still serves
        assert gateway.balance("acme")["balance"] < before["acme"]["balance"]
        assert cli(gateway.env, "balance", "acme")["balance"] == gateway.balance("acme")["balance"]
    finally:
        gateway.stop()


def test_no_secret_appears_in_any_file_of_the_data_dir_or_the_logs(
    tmp_path: Path, upstream: FakeOpenAIUpstream
) -> None:
    gateway = Gateway.initialised(tmp_path)
    key = configure(gateway, upstream, "acme", "5")
    gateway.start()
    try:
        chat(gateway, key)
        chat(gateway, key, stream=True)
        with pytest.raises(openai.AuthenticationError):
            chat(gateway, key + "x")
        upstream.script(Scripted.error(401, "Incorrect API key provided: " + UPSTREAM_KEY))
        with pytest.raises(openai.APIStatusError) as caught:
            chat(gateway, key)
        assert UPSTREAM_KEY not in str(caught.value.body)
    finally:
        gateway.stop()
    secrets = [UPSTREAM_KEY, key, key[4:-4], gateway.admin_key, gateway.admin_key[4:]]
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.suffix == ".sqlite" for path in files)
    for path in files:
        content = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in content, f"a secret was found in {path.name}"
