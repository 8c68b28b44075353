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
    admin_key: str

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
    admin_key = ledger.initialise()
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
        yield Setup(client, ledger, upstream, key, admin_key)
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


def test_an_over_long_anthropic_user_id_is_refused_naming_anthropics_field(setup: Setup) -> None:
    response = setup.client.post(
        "/v1/messages",
        headers={"x-api-key": setup.key},
        json={
            "model": CHAT,
            "max_tokens": 16,
            "messages": MESSAGES,
            "metadata": {"user_id": "u" * (MAX_USER_CHARS + 1)},
        },
    )
    assert response.status_code == 400 and response.json()["type"] == "error"
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and "metadata.user_id" in error["message"]
    assert setup.upstream.requests == []
    at_limit = setup.client.post(
        "/v1/messages",
        headers={"x-api-key": setup.key},
        json={"model": CHAT, "max_tokens": 16, "messages": MESSAGES, "metadata": {"user_id": "u" * MAX_USER_CHARS}},
    )
    assert setup.attribution(at_limit) == Attribution(user="u" * MAX_USER_CHARS)


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


def sent_requests(setup: Setup) -> dict[str, str]:
    """Four attributed requests and one without; their ids by a name."""
    sent = {
        "alice-ml": setup.post(
            "/v1/chat/completions",
            {"model": CHAT, "messages": MESSAGES, "user": "alice", "metadata": {"job": "nightly"}},
            "team:ml,run/1",
        ),
        "alice-web": setup.post("/v1/chat/completions", {"model": CHAT, "messages": MESSAGES, "user": "alice"}, "web"),
        "bob-ml": setup.post("/v1/embeddings", {"model": EMBED, "input": "hello", "user": "bob"}, "team:ml"),
        "image-ml": setup.post("/v1/images/generations", {"model": IMAGE, "prompt": "a cat"}, "team:ml"),
        "plain": setup.post("/v1/chat/completions", {"model": CHAT, "messages": MESSAGES}),
    }
    assert all(response.status_code == 200 for response in sent.values())
    return {name: response.headers["x-request-id"] for name, response in sent.items()}


def listed(setup: Setup, path: str, key: str, **query: str) -> list[dict[str, Any]]:
    response = setup.client.get(path, headers=auth(key), params=query)
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("path", ["/admin/v1/requests", "/v1/me/requests"])
def test_the_request_log_filters_by_user_tag_and_metadata_exactly(setup: Setup, path: str) -> None:
    ids = sent_requests(setup)
    key = setup.admin_key if path.startswith("/admin") else setup.key

    def found(**query: str) -> set[str]:
        return {row["request_id"] for row in listed(setup, path, key, **query)}

    assert found(user="alice") == {ids["alice-ml"], ids["alice-web"]}
    assert found(tag="team:ml") == {ids["alice-ml"], ids["bob-ml"], ids["image-ml"]}
    assert found(tag="team:ml", user="alice") == {ids["alice-ml"]}
    assert found(metadata="job=nightly") == {ids["alice-ml"]}
    assert found(tag="team") == set() and found(user="ALICE") == set()
    assert len(found()) == 5
    (row,) = listed(setup, path, key, tag="run/1")
    assert (row["end_user"], row["tags"], row["metadata"]) == ("alice", ["team:ml", "run/1"], {"job": "nightly"})


@pytest.mark.parametrize("path", ["/admin/v1/usage", "/v1/me/usage"])
def test_usage_filtered_by_user_or_tag_sums_exactly_the_matching_requests(setup: Setup, path: str) -> None:
    ids = sent_requests(setup)
    key = setup.admin_key if path.startswith("/admin") else setup.key
    records = {name: setup.ledger.get_request_record(request_id).details for name, request_id in ids.items()}

    def sums(**query: str) -> tuple[int, int, int, int]:
        rows = listed(setup, path, key, **query)
        charge = sum(int(row.get("charge_nanocredits", row["charge"])) for row in rows)
        return (
            sum(r["requests"] for r in rows),
            sum(r["input_tokens"] for r in rows),
            sum(r["images"] for r in rows),
            charge,
        )

    def expected(*names: str) -> tuple[int, int, int, int]:
        usages = [records[n].usage for n in names]
        return (
            len(names),
            sum(u.input_tokens for u in usages if u),
            sum(u.images for u in usages if u),
            sum(records[n].charge for n in names),
        )

    assert sums(tag="team:ml") == expected("alice-ml", "bob-ml", "image-ml")
    assert sums(user="alice") == expected("alice-ml", "alice-web")
    assert sums(metadata="job=nightly") == expected("alice-ml")
    assert sums(user="nobody") == (0, 0, 0, 0)
    assert sums() == expected(*ids)  # unfiltered: the hourly rollups, which agree


def test_a_metadata_filter_without_a_pair_is_a_400(setup: Setup) -> None:
    response = setup.client.get("/admin/v1/requests", headers=auth(setup.admin_key), params={"metadata": "job"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "metadata"
