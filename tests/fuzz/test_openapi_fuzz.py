"""schemathesis against the gateway's own OpenAPI document (``/admin/v1`` and ``/v1``,
the hot routes included): every operation gets schema-valid and schema-violating
requests, as the admin, as an API key holder and with no key, and no answer may be a
5xx (but a provider's 502/503/504), carry a traceback or a secret, or be an error
outside OpenAI's shape. Afterwards the ledger still verifies.

``FUZZ_EXAMPLES`` sets the examples per operation (default 20: about half a minute here);
``make fuzz`` runs many more.
"""

import json
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from adapters.cli.audit_commands import run_verify
from tests.fuzz.conftest import CHAT_MODEL, EMBEDDING_MODEL, FuzzGateway, fuzz_examples, fuzz_seed
from tests.fuzz.judge import ExceptionLog, answer_problem, settled_charges

IDENTITIES = ("admin", "user", "anonymous")
HOT_ROUTE_WEIGHT = 4  # the hot routes get this many times the examples of an admin operation
# A generated model id almost never names a priced model: half the time, ask for one that
# does, so the request reaches the (fake) provider and gets billed.
PRICED_MODEL = {
    "/v1/chat/completions": CHAT_MODEL,
    "/v1/messages": CHAT_MODEL,
    "/v1/messages/count_tokens": CHAT_MODEL,
    "/v1/responses": CHAT_MODEL,
    "/v1/embeddings": EMBEDDING_MODEL,
}
PROBLEMS_KEPT = 3  # per operation: enough to see the pattern


@pytest.fixture(scope="module")
def schema(fuzz_gateway: FuzzGateway) -> Any:
    return schemathesis.openapi.from_dict(fuzz_gateway.client.get("/openapi.json").json())


def test_the_document_describes_the_hot_routes_bodies(schema: Any) -> None:
    document = schema.raw_schema
    for path, name in (
        ("/v1/chat/completions", "ChatCompletionRequest"),
        ("/v1/messages", "MessagesRequest"),
        ("/v1/embeddings", "EmbeddingsRequest"),
    ):
        body = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{name}"}
        assert {"model"} <= set(document["components"]["schemas"][name]["required"])


def test_no_operation_answers_a_500_a_traceback_a_secret_or_a_misshapen_error(
    fuzz_gateway: FuzzGateway, schema: Any
) -> None:
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 40  # the whole API, not a part of it
    problems: list[str] = []
    with ExceptionLog() as logged:
        for operation in operations:
            problems += _fuzz(fuzz_gateway, operation, fuzz_examples(20))
    assert not problems, "\n".join(problems) + "".join(f"\n{raised}" for raised in fuzz_gateway.raised[:2])
    assert not fuzz_gateway.raised, fuzz_gateway.raised[0]
    assert not logged.records, "exceptions in the gateway's log:\n" + "\n".join(logged.summary())


def test_the_ledger_verifies_after_the_fuzzing(fuzz_gateway: FuzzGateway) -> None:
    assert fuzz_gateway.upstream.requests, "no fuzzed request reached the provider"
    _, over = settled_charges(fuzz_gateway.services)
    assert not over, f"charges above their holds: {over[:5]}"
    report = run_verify(fuzz_gateway.services, [])
    assert report["ok"], report["problems"]


def _fuzz(gateway: FuzzGateway, operation: Any, examples: int) -> list[str]:
    found: list[str] = []
    cases = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @hypothesis.seed(fuzz_seed())
    @settings(
        max_examples=examples * (HOT_ROUTE_WEIGHT if operation.path in PRICED_MODEL else 1),
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases, who=st.sampled_from(IDENTITIES), priced=st.booleans(), data=st.data())
    def run(case: Any, who: str, priced: bool, data: st.DataObject) -> None:
        _use_known_values(case, gateway.known, data)
        request = _request(case, gateway.auth(who), PRICED_MODEL.get(operation.path) if priced else None)
        response = gateway.client.request(**request)
        problem = answer_problem(
            operation.path, response.status_code, response.headers, response.content, gateway.secrets
        )
        if problem and len(found) < PROBLEMS_KEPT:
            found.append(
                f"{operation.method.upper()} {operation.path} as {who}: {problem}\n"
                f"    request: {json.dumps(_shown(request), default=str)[:600]}"
            )

    run()
    return found


def _use_known_values(case: Any, known: dict[str, list[str]], data: st.DataObject) -> None:
    """Half the time, a path parameter names something that exists (the account, the provider,
    a key), so the operation gets past its 404 and into its checks."""
    parameters = dict(case.path_parameters or {})
    for name in parameters:
        if name in known and data.draw(st.booleans()):
            parameters[name] = data.draw(st.sampled_from(known[name]))
    if parameters != (case.path_parameters or {}):
        case.path_parameters = parameters


def _request(case: Any, auth: dict[str, str], model: str | None) -> dict[str, Any]:
    """The case as keyword arguments of ``TestClient.request``; JSON is encoded as ``requests``
    does it (ASCII, lone surrogates escaped), so every generated string can be sent."""
    sent = case.as_transport_kwargs(base_url="http://testserver")
    headers = {k: v for k, v in sent["headers"].items() if k.lower() != "authorization"}
    headers.update(auth)
    if sent.get("cookies"):
        headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in sent["cookies"].items())
    request: dict[str, Any] = {
        "method": sent["method"],
        "url": sent["url"],
        "headers": headers,
        "params": sent.get("params") or None,
    }
    if "json" in sent:
        body = sent["json"]
        if model is not None and isinstance(body, dict):
            body = {**body, "model": model}
        request["content"] = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    elif sent.get("data") is not None:
        data = sent["data"]
        request["content"] = data if isinstance(data, bytes) else str(data).encode()
    return request


def _shown(request: dict[str, Any]) -> dict[str, Any]:
    """The request as a reproducer shows it (the identity is named beside it, never its key)."""
    shown = {k: v for k, v in request.items() if v is not None and k != "headers"}
    shown["content-type"] = request["headers"].get("Content-Type")
    if isinstance(shown.get("content"), bytes):
        shown["content"] = shown["content"].decode("utf-8", errors="replace")
    return shown
