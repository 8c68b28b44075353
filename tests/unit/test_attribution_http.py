"""Attribution over HTTP, in process against the fake OpenAI upstream: what a caller sends
as ``user``, ``metadata`` and ``x-tallyhub-tags`` (Anthropic: ``metadata.user_id``) is on
the request's record exactly, on every billed endpoint; ``user`` and ``metadata`` still
reach the provider as sent; a request over a bound is a 400 naming the field, answered
before any hold (the balance never moves, the provider sees nothing)."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapters.bootstrap import build_services, in_memory_ledger
from adapters.settings import Settings
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from domain.attribution import MAX_TAGS, MAX_USER_CHARS, Attribution
from tests.fakes.clock import FakeClock
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.unit.test_key_http import auth, in_process_app

SECRET = "sk-attribution-provider-secret-1234"
CHAT = "openai/gpt-4o-mini"
EMBED = "openai/text-embedding-3-small"
IMAGE = "openai/dall-e-3"
MESSAGES = [{"role": "user", "content": "hi"}]


@dataclass
class Setup:
    client: TestClient
    ledger: Ledger
    upstream: FakeOpenAIUpstream
    key: str

    def post(self, path: str, body: dict[str, Any], tags: str | None = None) -> Any:
        headers = auth(self.key) | ({"x-tallyhub-tags": tags} if tags is not None else {})
        return self.client.post(path, headers=headers, json=body)

    def attribution(self, response: Any) -> Attribution | None:
        assert response.status_code == 200, response.text
        return self.ledger.get_request_record(response.headers["x-request-id"]).details.attribution


@pytest.fixture
def setup() -> Iterator[Setup]:
    upstream = FakeOpenAIUpstream(api_key=SECRET).start()
    ledger = in_memory_ledger(clock=FakeClock())
    ledger.initialise()
    app = in_process_app(build_services(Settings(), ledger=ledger))
    ProviderRegistry(ledger).register_provider(
        "openai", "openai", base_url=upstream.base_url, region=None, secret=SECRET
    )
    prices = Prices(ledger)
    prices.set_price(CHAT, price_from_credits(input="2", output="8"))
    prices.set_price(EMBED, price_from_credits(input="1", output="0"))
    prices.set_price(IMAGE, price_from_credits(input="0", output="0", per_image="0.04"))
    Accounts(ledger).create_account("acme", starter_credits=10**10)
    key = ApiKeys(ledger).issue_api_key("acme").plaintext
    with TestClient(app) as client:
        yield Setup(client, ledger, upstream, key)
    ledger.close()
    upstream.stop()


def test_chat_records_user_metadata_and_tags_exactly_and_still_forwards_them(setup: Setup) -> None:
    body = {"model": CHAT, "messages": MESSAGES, "user": "end-user-7", "metadata": {"z": "1", "a": "2"}}
    response = setup.post("/v1/chat/completions", body, tags=" team:ml ,run/42,team:ml")
    assert setup.attribution(response) == Attribution(
        user="end-user-7", metadata=(("z", "1"), ("a", "2")), tags=("team:ml", "run/42")
    )
    sent = setup.upstream.requests[-1].json
    assert sent["user"] == "end-user-7" and sent["metadata"] == {"z": "1", "a": "2"}
    assert "x-tallyhub-tags" not in setup.upstream.requests[-1].headers


def test_a_request_without_attribution_records_none(setup: Setup) -> None:
    response = setup.post("/v1/chat/completions", {"model": CHAT, "messages": MESSAGES})
    assert setup.attribution(response) is None
    record = setup.ledger.get_request_record(response.headers["x-request-id"])
    assert "attribution" not in record.details.to_dict()


def test_repeated_tag_headers_are_one_list(setup: Setup) -> None:
    response = setup.client.post(
        "/v1/chat/completions",
        headers=[("authorization", f"Bearer {setup.key}"), ("x-tallyhub-tags", "a,b"), ("x-tallyhub-tags", "c")],
        json={"model": CHAT, "messages": MESSAGES},
    )
    assert setup.attribution(response) == Attribution(tags=("a", "b", "c"))


def test_embeddings_and_images_record_user_and_tags(setup: Setup) -> None:
    embedded = setup.post("/v1/embeddings", {"model": EMBED, "input": "hello", "user": "u-1"}, tags="batch")
    assert setup.attribution(embedded) == Attribution(user="u-1", tags=("batch",))
    drawn = setup.post("/v1/images/generations", {"model": IMAGE, "prompt": "a cat", "user": "u-2"}, tags="art")
    assert setup.attribution(drawn) == Attribution(user="u-2", tags=("art",))
    assert [r.json["user"] for r in setup.upstream.requests] == ["u-1", "u-2"]


def test_anthropic_metadata_user_id_is_the_user(setup: Setup) -> None:
    response = setup.client.post(
        "/v1/messages",
        headers={"x-api-key": setup.key, "x-tallyhub-tags": "sdk"},
        json={"model": CHAT, "max_tokens": 16, "messages": MESSAGES, "metadata": {"user_id": "anthropic-user"}},
    )
    assert setup.attribution(response) == Attribution(user="anthropic-user", tags=("sdk",))


OVER: list[tuple[str, str, dict[str, Any], str | None, str]] = [
    ("chat user", "/v1/chat/completions", {"user": "u" * (MAX_USER_CHARS + 1)}, None, "user"),
    ("chat metadata", "/v1/chat/completions", {"metadata": {f"k{i}": "v" for i in range(17)}}, None, "metadata"),
    ("chat tags", "/v1/chat/completions", {}, ",".join(f"t{i}" for i in range(MAX_TAGS + 1)), "x-tallyhub-tags"),
    ("embeddings user", "/v1/embeddings", {"user": "u" * (MAX_USER_CHARS + 1)}, None, "user"),
    ("embeddings tags", "/v1/embeddings", {}, "bad tag", "x-tallyhub-tags"),
    ("images user", "/v1/images/generations", {"user": 7}, None, "user"),
    ("images tags", "/v1/images/generations", {}, "t" * 65, "x-tallyhub-tags"),
]
BASE = {
    "/v1/chat/completions": {"model": CHAT, "messages": MESSAGES},
    "/v1/embeddings": {"model": EMBED, "input": "hello"},
    "/v1/images/generations": {"model": IMAGE, "prompt": "a cat"},
}


@pytest.mark.parametrize(("path", "extra", "tags", "param"), [o[1:] for o in OVER], ids=[o[0] for o in OVER])
def test_over_a_bound_is_a_400_naming_the_field_before_any_hold(
    setup: Setup, path: str, extra: dict[str, Any], tags: str | None, param: str
) -> None:
    before = setup.ledger.get_account("acme")
    response = setup.post(path, {**BASE[path], **extra}, tags=tags)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_request", param)
    after = setup.ledger.get_account("acme")
    assert (after.available, after.version) == (before.available, before.version), "no hold was placed"
    assert setup.upstream.requests == []


def test_at_the_limit_is_served(setup: Setup) -> None:
    body = {"model": CHAT, "messages": MESSAGES, "user": "u" * MAX_USER_CHARS}
    response = setup.post("/v1/chat/completions", body, tags=",".join(f"t{i}" for i in range(MAX_TAGS)))
    attribution = setup.attribution(response)
    assert attribution is not None and attribution.user == "u" * MAX_USER_CHARS and len(attribution.tags) == MAX_TAGS
