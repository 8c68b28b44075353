"""GET /health and GET /ready of the app (in process, over an in-memory ledger): the JSON they
answer, no key needed, answered before the failed-auth throttle and the body limits, a
process whose read models do not run is not ready; /docs serves Swagger UI from the gateway
itself, over /openapi.json, which has every hot route's request and 200 answer schemas."""

from collections.abc import Iterator
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from adapters.bootstrap import build_services, in_memory_ledger
from adapters.http.app import create_app
from adapters.http.schemas import HOT_ROUTES
from adapters.settings import Settings

READY_CHECKS = {"store", "master_key", "account_writer", "read_models", "shutdown"}


@pytest.fixture
def services() -> Iterator[object]:
    ledger = in_memory_ledger()
    ledger.initialise()
    built = build_services(replace(Settings(), auth_failure_limit=2, max_body_bytes=1024), ledger=ledger)
    yield built
    ledger.close()


def test_health_answers_ok_without_a_key_and_ready_lists_every_check(services: object) -> None:
    with TestClient(create_app(services)) as client:  # type: ignore[arg-type]
        health = client.get("/health")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        assert health.headers["cache-control"] == "no-store" and health.headers["x-request-id"]
        ready = client.get("/ready")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["status"] == "ok" and set(body["checks"]) == READY_CHECKS
        assert all(check["ok"] for check in body["checks"].values())
        assert client.head("/health").status_code == 200


def test_a_process_whose_projections_do_not_run_is_not_ready(services: object) -> None:
    with TestClient(create_app(services, run_projections=False)) as client:  # type: ignore[arg-type]
        ready = client.get("/ready")
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "unavailable"
        assert body["checks"]["read_models"]["ok"] is False
        assert body["checks"]["read_models"]["error"] == "the projection runner is not running"
        assert {name for name, check in body["checks"].items() if check["ok"]} == READY_CHECKS - {"read_models"}
        assert client.get("/health").status_code == 200  # alive all the same


def test_before_the_group_commit_writer_starts_the_process_is_not_ready(services: object) -> None:
    client = TestClient(create_app(services))  # type: ignore[arg-type]  # no lifespan: nothing started
    body = client.get("/ready").json()
    assert body["checks"]["account_writer"] == {
        "ok": False,
        "error": "the account writer (group commit) is not running",
    }


def test_health_is_answered_to_an_address_the_throttle_refuses_and_past_the_body_limit(services: object) -> None:
    with TestClient(create_app(services), client=("10.0.0.9", 4000)) as client:  # type: ignore[arg-type]
        for _ in range(2):  # TALLYHUB_AUTH_FAILURE_LIMIT=2
            assert client.get("/v1/models", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/v1/models").status_code == 429  # the throttle holds this address
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 200
        big = client.request("GET", "/health", content=b"x" * 4096)  # above TALLYHUB_MAX_BODY_BYTES
        assert big.status_code == 200


def test_docs_serves_swagger_ui_from_the_gateway_over_openapi_json(services: object) -> None:
    client = TestClient(create_app(services))  # type: ignore[arg-type]
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "'/openapi.json'" in page.text or '"/openapi.json"' in page.text
    assert "cdn." not in page.text  # nothing loaded from a CDN
    for asset in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"):
        assert asset in page.text
        served = client.get(asset)
        assert served.status_code == 200 and len(served.content) > 10_000


def test_openapi_has_every_hot_route_with_its_request_and_200_schemas(services: object) -> None:
    document = TestClient(create_app(services)).get("/openapi.json").json()  # type: ignore[arg-type]
    schemas = document["components"]["schemas"]
    answers = {
        "/v1/chat/completions": ("ChatCompletion", "ChatCompletionChunk"),
        "/v1/messages": ("Message", "MessageStreamEvent"),
        "/v1/responses": ("Response", "ResponseStreamEvent"),
        "/v1/embeddings": ("Embeddings", None),
    }
    counting = "/v1/messages/count_tokens"  # answers a count, never charged: no receipt headers
    assert {path for _, path in HOT_ROUTES} == set(answers) | {counting}
    count = document["paths"][counting]["post"]
    assert count["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("MessagesCountTokensRequest")
    assert count["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("MessageTokensCount")
    assert schemas["MessageTokensCount"]["required"] == ["input_tokens"]
    assert "x-tallyhub-usage-source" in count["responses"]["200"]["headers"]
    for path, (answer, event) in answers.items():
        operation = document["paths"][path]["post"]
        request = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert request.removeprefix("#/components/schemas/") in schemas
        ok = operation["responses"]["200"]
        assert ok["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{answer}"}
        assert "x-tallyhub-charge-nanocredits" in ok["headers"]
        assert answer in schemas and schemas[answer]["properties"]
        if event is not None:
            assert event in schemas
            assert event in ok["content"]["text/event-stream"]["schema"]["description"]
        else:
            assert "text/event-stream" not in ok["content"]
    assert set(document["paths"]["/ready"]["get"]["responses"]) >= {"200", "503"}
    assert "/health" in document["paths"]


def test_the_lag_bound_is_read_from_its_variable_with_a_default_and_a_clear_error() -> None:
    from adapters.settings import SettingsError

    assert Settings.from_env({}).ready_max_lag_events == 10_000
    assert Settings.from_env({"TALLYHUB_READY_MAX_LAG_EVENTS": "250"}).ready_max_lag_events == 250
    for wrong in ("0", "-3", "many"):
        with pytest.raises(SettingsError, match="TALLYHUB_READY_MAX_LAG_EVENTS"):
            Settings.from_env({"TALLYHUB_READY_MAX_LAG_EVENTS": wrong})
