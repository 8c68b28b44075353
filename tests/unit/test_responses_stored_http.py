"""``GET``/``DELETE /v1/responses/{id}`` and ``GET /v1/responses/{id}/input_items`` over the
in-process app, through the official ``openai`` SDK (``responses.retrieve``,
``responses.input_items.list``, ``responses.delete``) and raw HTTP for the error shapes:
only the account that stored a response sees it; anything else is a 404
``response_not_found`` in OpenAI's error shape; with storage off a 404 that says so. Also the
two settings, and which stored items are a response's input."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from adapters.bootstrap import build_services, in_memory_ledger
from adapters.http.app import create_app
from adapters.services import Services
from adapters.settings import Settings, SettingsError
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.stored_responses import input_items_of
from tests.fakes.clock import FakeClock

NOT_FOUND_CODE = "response_not_found"


@dataclass
class Gateway:
    services: Services
    http: TestClient
    alice: str  # API keys
    alice_second: str
    bob: str

    def sdk(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(api_key=key, base_url="http://testserver/v1", http_client=self.http, max_retries=0)

    def call(self, method: str, path: str, key: str) -> httpx.Response:
        return self.http.request(method, path, headers={"authorization": f"Bearer {key}"})


def gateway(tmp_path: Path, *, store: bool) -> Iterator[Gateway]:
    ledger = in_memory_ledger(clock=FakeClock())
    ledger.initialise()
    accounts, keys = Accounts(ledger), ApiKeys(ledger)
    alice, bob = accounts.create_account("alice"), accounts.create_account("bob")
    services = build_services(Settings(data_dir=tmp_path, responses_store=store), ledger=ledger)
    with TestClient(create_app(services, run_projections=False)) as http:
        yield Gateway(
            services,
            http,
            keys.issue_api_key("alice").plaintext,
            keys.issue_api_key("alice", models=["openai/*"]).plaintext,
            keys.issue_api_key("bob").plaintext,
        )
    assert alice.id != bob.id


@pytest.fixture
def on(tmp_path: Path) -> Iterator[Gateway]:
    yield from gateway(tmp_path, store=True)


@pytest.fixture
def off(tmp_path: Path) -> Iterator[Gateway]:
    yield from gateway(tmp_path, store=False)


def account_of(gw: Gateway, key: str) -> Any:
    return gw.services.ledger.authenticate(key).account_id


def stored(gw: Gateway, key: str, response_id: str, turns: int = 1) -> dict[str, Any]:
    """Keep a response whose conversation has ``turns`` user/assistant exchanges."""
    items: list[dict[str, Any]] = []
    for n in range(turns):
        items.append({"role": "user", "content": f"question {n}"})
        items.append({"type": "message", "role": "assistant", "content": f"answer {n}"})
    output = [
        {
            "type": "message",
            "id": f"msg_out_{response_id}",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "the last answer", "annotations": []}],
        }
    ]
    items = items[:-1] + output
    response = {
        "id": response_id,
        "object": "response",
        "created_at": 1_796_000_000,
        "status": "completed",
        "model": "openai/gpt-4o-mini",
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "store": True,
        "usage": {"input_tokens": 12, "output_tokens": 3, "total_tokens": 15, "cost_nanocredits": 4_500},
    }
    anyio.run(gw.services.responses.keep, account_of(gw, key), response, items)
    return response


def assert_not_found(answer: httpx.Response, code: str = NOT_FOUND_CODE) -> dict[str, Any]:
    assert answer.status_code == 404, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["type"] == "invalid_request_error"
    assert answer.headers["x-request-id"]
    return dict(error)


def test_the_sdk_retrieves_a_stored_response(on: Gateway) -> None:
    kept = stored(on, on.alice, "resp_retrieve")
    response = on.sdk(on.alice).responses.retrieve("resp_retrieve")
    assert (response.id, response.status, response.output_text) == ("resp_retrieve", "completed", "the last answer")
    assert response.usage is not None and response.usage.model_extra["cost_nanocredits"] == 4_500
    assert on.call("GET", "/v1/responses/resp_retrieve", on.alice_second).json() == kept  # any key of the account


def test_the_sdk_lists_input_items_newest_first_page_by_page(on: Gateway) -> None:
    stored(on, on.alice, "resp_items", turns=3)  # q0 a0 q1 a1 q2 + this response's output
    sdk = on.sdk(on.alice)
    newest_first = list(sdk.responses.input_items.list("resp_items", limit=2))  # three pages, followed by `after`
    texts = [item.content[0].text for item in newest_first]  # type: ignore[union-attr]
    assert texts == ["question 2", "answer 1", "question 1", "answer 0", "question 0"]
    assert [item.type for item in newest_first] == ["message"] * 5
    assert len({item.id for item in newest_first}) == 5
    oldest_first = sdk.responses.input_items.list("resp_items", order="asc", limit=100)
    assert [item.id for item in oldest_first.data] == [item.id for item in reversed(newest_first)]
    assert oldest_first.has_more is False
    page = on.call("GET", "/v1/responses/resp_items/input_items?limit=2", on.alice).json()
    assert page["object"] == "list" and page["has_more"] is True
    assert (page["first_id"], page["last_id"]) == (page["data"][0]["id"], page["data"][1]["id"])
    assert page["data"][0]["content"] == [{"type": "input_text", "text": "question 2"}]


def test_the_sdk_deletes_a_response_and_it_is_gone(on: Gateway) -> None:
    stored(on, on.alice, "resp_delete")
    stored(on, on.alice, "resp_other")
    sdk = on.sdk(on.alice)
    assert sdk.responses.delete("resp_delete") is None  # the SDK reads no body
    with pytest.raises(openai.NotFoundError) as gone:
        sdk.responses.retrieve("resp_delete")
    assert isinstance(gone.value.body, dict) and gone.value.body["code"] == NOT_FOUND_CODE
    assert_not_found(on.call("DELETE", "/v1/responses/resp_delete", on.alice))
    assert_not_found(on.call("GET", "/v1/responses/resp_delete/input_items", on.alice))
    answer = on.call("DELETE", "/v1/responses/resp_other", on.alice)
    assert answer.status_code == 200
    assert answer.json() == {"id": "resp_other", "object": "response.deleted", "deleted": True}


def test_another_accounts_response_is_not_found_like_an_unknown_one(on: Gateway) -> None:
    stored(on, on.alice, "resp_alices")
    for method, path in (
        ("GET", "/v1/responses/{}"),
        ("GET", "/v1/responses/{}/input_items"),
        ("DELETE", "/v1/responses/{}"),
    ):
        theirs = assert_not_found(on.call(method, path.format("resp_alices"), on.bob))
        unknown = assert_not_found(on.call(method, path.format("resp_nobodys"), on.bob))
        assert theirs["message"] == unknown["message"].replace("resp_nobodys", "resp_alices")
    with pytest.raises(openai.NotFoundError):
        on.sdk(on.bob).responses.retrieve("resp_alices")
    assert on.call("GET", "/v1/responses/resp_alices", on.alice).status_code == 200  # Bob's delete did nothing


def test_with_storage_off_every_route_is_a_404_that_says_so(off: Gateway) -> None:
    for method, path in (
        ("GET", "/v1/responses/resp_x"),
        ("GET", "/v1/responses/resp_x/input_items"),
        ("DELETE", "/v1/responses/resp_x"),
    ):
        error = assert_not_found(off.call(method, path, off.alice), code="responses_store_off")
        assert "TALLYHUB_RESPONSES_STORE" in error["message"]
    with pytest.raises(openai.NotFoundError) as refused:
        off.sdk(off.alice).responses.retrieve("resp_x")
    assert "TALLYHUB_RESPONSES_STORE" in refused.value.message


def test_a_bad_key_and_bad_parameters_are_refused_in_openais_shape(on: Gateway) -> None:
    stored(on, on.alice, "resp_params")
    for method, path in (("GET", "/v1/responses/resp_params"), ("DELETE", "/v1/responses/resp_params")):
        answer = on.call(method, path, "thk_not-a-key")
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key"
    assert on.http.get("/v1/responses/resp_params").status_code == 401
    for query, param in (
        ("/input_items?limit=0", "query.limit"),
        ("/input_items?limit=101", "query.limit"),
        ("/input_items?order=sideways", "query.order"),
        ("/input_items?after=msg_nope", "after"),
        ("?stream=true", "stream"),
    ):
        answer = on.call("GET", f"/v1/responses/resp_params{query}", on.alice)
        assert answer.status_code == 400, query
        assert answer.json()["error"]["param"] == param
        assert answer.json()["error"]["type"] == "invalid_request_error"


def test_the_settings_parse_and_name_the_variable_when_wrong() -> None:
    defaults = Settings.from_env({})
    assert (defaults.responses_store, defaults.responses_retention_days) == (False, 30)
    chosen = Settings.from_env({"TALLYHUB_RESPONSES_STORE": "on", "TALLYHUB_RESPONSES_RETENTION_DAYS": "7"})
    assert (chosen.responses_store, chosen.responses_retention_days) == (True, 7)
    assert Settings.from_env({"TALLYHUB_RESPONSES_STORE": "OFF"}).responses_store is False
    for name, value in (
        ("TALLYHUB_RESPONSES_STORE", "yes please"),
        ("TALLYHUB_RESPONSES_RETENTION_DAYS", "0"),
        ("TALLYHUB_RESPONSES_RETENTION_DAYS", "-3"),
        ("TALLYHUB_RESPONSES_RETENTION_DAYS", "thirty"),
    ):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({name: value})


def test_a_responses_input_items_are_its_conversation_without_its_output() -> None:
    output = [{"type": "reasoning", "id": "rs_1"}, {"type": "function_call", "id": "fc_1", "call_id": "c1"}]
    response = {"id": "resp_1", "output": output}
    asked = [{"role": "user", "content": "weather?"}]
    assert input_items_of(response, [*asked, *output]) == asked
    # without ids: by kind, and never more than the output's number
    bare = [{"type": "reasoning"}, {"type": "function_call", "call_id": "c1"}]
    assert input_items_of(response, [*asked, *bare]) == asked
    earlier = [{"role": "assistant", "content": "prefilled"}]
    assert input_items_of({"output": bare[-1:]}, [*earlier, *bare[-1:]]) == earlier
    # a call's output and the user's message are input, whatever the count
    answered = [*asked, *output, {"type": "function_call_output", "call_id": "c1", "output": "sunny"}]
    assert input_items_of({"output": []}, answered) == answered
    assert input_items_of({"output": [{"id": "msg_9"}]}, [*answered, {"id": "msg_9", "role": "assistant"}]) == answered
