"""Stored responses end to end: ``tallyhub serve`` with ``TALLYHUB_RESPONSES_STORE=on`` (on
SQLite and PostgreSQL) and off, driven by the official ``openai`` SDK against the OpenAI fake.

With storage on: ``responses.create`` stores; ``previous_response_id`` continues the
conversation (the upstream sees the earlier turns) and is charged like any request;
``retrieve``, ``input_items.list`` and ``delete`` work; a deleted response cannot be
continued (400) nor read (404), another account's is not found; nothing of the conversation
is in the SQLite files in plaintext. With storage off: ``store: true`` is answered
``store: false`` and says so, a ``previous_response_id`` is a 400, a retrieve a 404.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import openai
import pytest

from tests.conftest import PgSchemas
from tests.e2e.conftest import configure
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import Gateway, cli

MODEL = "openai/gpt-4o-mini"
UPSTREAM_KEY = "sk-upstream-e2e-secret-7d41c9"


@dataclass
class Served:
    gateway: Gateway
    upstream: FakeOpenAIUpstream
    client: openai.OpenAI
    other: openai.OpenAI  # a key of another account

    def balance(self) -> int:
        balance: int = self.gateway.balance("acme")["balance"]
        return balance


def serve(tmp: Path, database_url: str | None, store: str) -> Iterator[Served]:
    upstream = FakeOpenAIUpstream(api_key=UPSTREAM_KEY).start()
    gateway = Gateway.initialised(tmp, database_url, TALLYHUB_RESPONSES_STORE=store)
    try:
        key = configure(gateway, upstream, "acme", "100")
        cli(gateway.env, "accounts", "create", "globex")
        cli(gateway.env, "credits", "grant", "globex", "100", "--reason", "e2e")
        other_key = cli(gateway.env, "keys", "issue", "globex", "--name", "e2e")["key"]
        gateway.start()
        url = gateway.url + "/v1"
        with (
            openai.OpenAI(base_url=url, api_key=key, max_retries=0) as client,
            openai.OpenAI(base_url=url, api_key=other_key, max_retries=0) as other,
        ):
            yield Served(gateway, upstream, client, other)
    finally:
        gateway.stop()
        upstream.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def on(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pg_schemas: PgSchemas
) -> Iterator[Served]:
    database_url = pg_schemas.new_url() if request.param == "postgres" else None
    yield from serve(tmp_path_factory.mktemp(f"stored-{request.param}"), database_url, "on")


@pytest.fixture(scope="module")
def off(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from serve(tmp_path_factory.mktemp("not-stored"), None, "off")


def upstream_messages(served: Served) -> str:
    """What the upstream was last sent as conversation, as text (in order)."""
    return json.dumps(served.upstream.requests[-1].json["messages"])


def charged(raw: Any) -> int:
    return int(raw.headers["x-tallyhub-charge-nanocredits"])


def test_a_conversation_continues_from_a_stored_response_and_is_charged_like_any_request(on: Served) -> None:
    name = f"Zorblax-{uuid4().hex[:8]}"
    first = on.client.responses.create(model=MODEL, input=f"My name is {name}.")
    assert first.store is True
    before = on.balance()
    raw = on.client.responses.with_raw_response.create(
        model=MODEL, input="What is my name?", previous_response_id=first.id
    )
    second = raw.parse()
    sent = upstream_messages(on)
    assert sent.index(name) < sent.index(first.output_text) < sent.index("What is my name?")  # earlier turns, in order
    assert charged(raw) > 0 and before - on.balance() == charged(raw) == second.usage.model_extra["cost_nanocredits"]

    retrieved = on.client.responses.retrieve(second.id)
    assert (retrieved.id, retrieved.output_text, retrieved.previous_response_id) == (
        second.id,
        second.output_text,
        first.id,
    )
    listed = list(on.client.responses.input_items.list(second.id, order="asc"))
    texts = [part.text for item in listed for part in item.content]  # type: ignore[union-attr]
    assert texts == [f"My name is {name}.", first.output_text, "What is my name?"]
    if on.gateway.env.get("TALLYHUB_DATABASE_URL") is None:  # SQLite: the data dir holds the whole store
        data_dir = Path(on.gateway.env["TALLYHUB_DATA_DIR"])
        files = [path for path in data_dir.iterdir() if ".sqlite" in path.name]
        assert files and all(name.encode() not in path.read_bytes() for path in files)


def test_a_deleted_response_can_be_neither_continued_nor_read(on: Served) -> None:
    first = on.client.responses.create(model=MODEL, input="Remember the number 7.")
    second = on.client.responses.create(model=MODEL, input="And 8.", previous_response_id=first.id)
    assert on.client.responses.delete(first.id) is None
    with pytest.raises(openai.NotFoundError) as gone:
        on.client.responses.retrieve(first.id)
    assert isinstance(gone.value.body, dict) and gone.value.body["code"] == "response_not_found"
    before = on.balance()
    with pytest.raises(openai.BadRequestError) as refused:
        on.client.responses.create(model=MODEL, input="Which number?", previous_response_id=first.id)
    error = refused.value.body
    assert isinstance(error, dict)
    assert (error["code"], error["param"]) == ("previous_response_not_found", "previous_response_id")
    assert on.balance() == before  # refused before anything was held or charged
    third = on.client.responses.create(model=MODEL, input="Which numbers?", previous_response_id=second.id)
    assert "Remember the number 7." in upstream_messages(on)  # the later response kept its whole conversation
    assert third.store is True


def test_another_accounts_response_is_not_found(on: Served) -> None:
    mine = on.client.responses.create(model=MODEL, input="Only for acme.")
    with pytest.raises(openai.NotFoundError) as hidden:
        on.other.responses.retrieve(mine.id)
    assert isinstance(hidden.value.body, dict) and hidden.value.body["code"] == "response_not_found"
    with pytest.raises(openai.BadRequestError) as refused:
        on.other.responses.create(model=MODEL, input="Continue.", previous_response_id=mine.id)
    assert isinstance(refused.value.body, dict) and refused.value.body["code"] == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        on.other.responses.delete(mine.id)
    assert on.client.responses.retrieve(mine.id).id == mine.id


def test_with_storage_off_nothing_is_stored_and_it_says_so(off: Served) -> None:
    raw = off.client.responses.with_raw_response.create(model=MODEL, input="Keep this?", store=True)
    response = raw.parse()
    assert response.store is False and raw.headers["x-tallyhub-responses-store"] == "off"
    with pytest.raises(openai.NotFoundError) as not_kept:
        off.client.responses.retrieve(response.id)
    assert isinstance(not_kept.value.body, dict) and not_kept.value.body["code"] == "responses_store_off"
    before = off.balance()
    with pytest.raises(openai.BadRequestError) as refused:
        off.client.responses.create(model=MODEL, input="Go on.", previous_response_id=response.id)
    error = refused.value.body
    assert isinstance(error, dict) and error["param"] == "previous_response_id"
    assert "TALLYHUB_RESPONSES_STORE" in error["message"]
    assert off.balance() == before
