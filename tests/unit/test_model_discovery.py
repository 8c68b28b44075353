"""Model discovery: the use case's marks (priced / routable / unpriced) and credential
choice over an in-memory ledger with a scripted lister; then ``tallyhub models discover
--json`` and ``GET /admin/v1/providers/{name}/models`` over a real store (SQLite) against
fake providers on loopback — the same document from both, the provider's failure as a
clear error, nothing recorded, and the credential never in any output or log line."""

import asyncio
import io
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapters.bootstrap import build_services
from adapters.cli.main import main
from adapters.http.app import create_app
from adapters.settings import Settings
from application.ledger import Ledger
from application.model_discovery import Discovery, ModelDiscovery, ProviderModel
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from application.routing import Route, Router
from domain.errors import InvalidRequest, ProviderNotFound, UpstreamError
from tests.fakes.model_catalogs import (
    FakeAnthropicModelList,
    FakeOpenAIModelList,
    anthropic_model,
    openai_model,
)

OPENAI_KEY = "sk-proj-stored-credential-7f3a"
ANTHROPIC_KEY = "sk-ant-stored-credential-91c2"


class ScriptedLister:
    """A ``ModelLister`` answering from a list, or failing for chosen credentials."""

    def __init__(self, models: list[str], failures: dict[str, UpstreamError] | None = None) -> None:
        self.models = models
        self.failures = failures or {}
        self.asked: list[str | None] = []

    async def list_models(self, route: Route) -> list[ProviderModel]:
        self.asked.append(route.secret)
        if route.secret in self.failures:
            raise self.failures[route.secret]
        return [ProviderModel(id=model) for model in self.models]


def refused() -> UpstreamError:
    return UpstreamError(
        "provider 'oa' refused the gateway's credential (HTTP 401)", status=502, code="upstream_auth_failed"
    )


@pytest.fixture
def catalog(ledger: Ledger) -> Ledger:
    """Provider ``oa``: gpt-4o-mini priced, gpt-4.1 reached by alias ``fast`` (no price), o3 neither."""
    ProviderRegistry(ledger).register_provider("oa", "openai", base_url=None, region=None, secret=OPENAI_KEY)
    prices = Prices(ledger)
    prices.set_price("oa/gpt-4o-mini", price_from_credits(input="0.15", output="0.6"))
    prices.set_alias("fast", ["oa/gpt-4.1", "oa/gpt-4o-mini"])
    return ledger


def discover(ledger: Ledger, router: Router, lister: Any, *, mode: str, name: str = "oa") -> Discovery:
    discovery = ModelDiscovery(ledger, router, mode=mode)
    return asyncio.run(discovery.discover(discovery.plan(name), {"openai": lister}))


def marks(found: Discovery) -> dict[str, tuple[str, bool, tuple[str, ...]]]:
    return {model.model: (model.mark, model.routable, model.aliases) for model in found.models}


LISTED = ["o3", "gpt-4o-mini", "gpt-4.1", "gpt-4o-mini"]


def test_track_mode_marks_a_priced_model_an_alias_target_and_an_unpriced_one(catalog: Ledger, router: Router) -> None:
    found = discover(catalog, router, ScriptedLister(LISTED), mode="track")
    assert marks(found) == {
        "oa/gpt-4.1": ("routable", True, ("fast",)),
        "oa/gpt-4o-mini": ("priced", True, ("fast",)),
        "oa/o3": ("unpriced", False, ()),
    }
    assert (found.count("priced"), found.count("routable"), found.count("unpriced")) == (1, 1, 1)
    assert found.price_book_version == 1


def test_credits_mode_never_routes_an_unpriced_alias_target(catalog: Ledger, router: Router) -> None:
    found = discover(catalog, router, ScriptedLister(LISTED), mode="credits")
    assert marks(found)["oa/gpt-4.1"] == ("unpriced", False, ("fast",))
    assert marks(found)["oa/gpt-4o-mini"] == ("priced", True, ("fast",))


def test_a_disabled_provider_still_lists_but_nothing_is_routable(catalog: Ledger, router: Router) -> None:
    ProviderRegistry(catalog).disable_provider("oa")
    found = discover(catalog, router, ScriptedLister(LISTED), mode="track")
    assert not found.enabled
    assert marks(found)["oa/gpt-4o-mini"] == ("priced", False, ("fast",))
    assert not any(model.routable for model in found.models)


def test_a_refused_credential_gives_way_to_the_next_but_other_failures_do_not(catalog: Ledger, router: Router) -> None:
    ProviderRegistry(catalog).add_credential("oa", "sk-proj-second-credential-0b1d")
    lister = ScriptedLister(["o3"], {OPENAI_KEY: refused()})
    assert [model.model for model in discover(catalog, router, lister, mode="track").models] == ["oa/o3"]
    assert lister.asked == [OPENAI_KEY, "sk-proj-second-credential-0b1d"]
    down = UpstreamError("provider 'oa' failed to list its models (HTTP 500): boom", status=502)
    lister = ScriptedLister(["o3"], {OPENAI_KEY: down})
    with pytest.raises(UpstreamError) as failed:
        discover(catalog, router, lister, mode="track")
    assert failed.value is down and lister.asked == [OPENAI_KEY]


def test_every_credential_refused_raises_the_last_refusal(catalog: Ledger, router: Router) -> None:
    lister = ScriptedLister(["o3"], {OPENAI_KEY: refused()})
    with pytest.raises(UpstreamError) as failed:
        discover(catalog, router, lister, mode="track")
    assert failed.value.code == "upstream_auth_failed"


def test_no_usable_credential_or_an_unknown_provider_is_refused(catalog: Ledger, router: Router) -> None:
    provider = catalog.get_provider("oa")
    ProviderRegistry(catalog).disable_credential("oa", provider.credentials[0].credential_id, "operator")
    with pytest.raises(UpstreamError) as failed:
        discover(catalog, router, ScriptedLister(["o3"]), mode="track")
    assert (failed.value.status, failed.value.code) == (503, "no_usable_credential")
    with pytest.raises(ProviderNotFound):
        discover(catalog, router, ScriptedLister(["o3"]), mode="track", name="nobody")


def test_a_provider_that_needs_no_secret_is_asked_without_one(ledger: Ledger, router: Router) -> None:
    ProviderRegistry(ledger).register_provider("local", "ollama", base_url=None, region=None, secret=None)
    Prices(ledger).set_price("local/llama3.2", price_from_credits(input="0", output="0"))
    lister = ScriptedLister(["llama3.2", "qwen3:8b"])
    discovery = ModelDiscovery(ledger, router, mode="credits")
    found = asyncio.run(discovery.discover(discovery.plan("local"), {"ollama": lister}))
    assert marks(found) == {"local/llama3.2": ("priced", True, ()), "local/qwen3:8b": ("unpriced", False, ())}
    assert lister.asked == [None]


def test_an_adapter_that_cannot_list_is_a_clear_400(catalog: Ledger, router: Router) -> None:
    with pytest.raises(InvalidRequest, match="provider 'oa' \\(openai\\) cannot list its models"):
        discover(catalog, router, object(), mode="track")


def test_discovery_records_nothing(catalog: Ledger, router: Router) -> None:
    head = catalog.recorder.max_notification_id()
    discover(catalog, router, ScriptedLister(LISTED), mode="track")
    with pytest.raises(UpstreamError):
        discover(catalog, router, ScriptedLister(LISTED, {OPENAI_KEY: refused()}), mode="track")
    assert catalog.recorder.max_notification_id() == head


# ---------------------------------------------------------------------- CLI and admin API


@pytest.fixture
def openai_upstream() -> Iterator[FakeOpenAIModelList]:
    models = [openai_model("gpt-4o-mini"), openai_model("gpt-4.1"), openai_model("o3")]
    with FakeOpenAIModelList(models, api_key=OPENAI_KEY) as fake:
        yield fake


@pytest.fixture
def anthropic_upstream() -> Iterator[FakeAnthropicModelList]:
    models = [anthropic_model(f"claude-test-{i}", max_input_tokens=200_000, max_tokens=64_000) for i in range(3)]
    with FakeAnthropicModelList(models, api_key=ANTHROPIC_KEY, page_size=2) as fake:
        yield fake


def cli(capsys: pytest.CaptureFixture[str], *args: str, stdin: str = "") -> tuple[int, Any, str]:
    """``tallyhub ARGS --json`` in this process: exit status, the JSON document, stderr."""
    capsys.readouterr()
    saved, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        status = main([*args, "--json"])
    finally:
        sys.stdin = saved
    out, err = capsys.readouterr()
    return status, json.loads(out), err


@pytest.fixture
def store(
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    openai_upstream: FakeOpenAIModelList,
    anthropic_upstream: FakeAnthropicModelList,
) -> str:
    """A store made by the command line, track mode; returns the admin key."""
    monkeypatch.setenv("TALLYHUB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TALLYHUB_BILLING_MODE", "track")
    monkeypatch.setenv("TALLYHUB_READ_CACHE_SECONDS", "0")
    status, initialised, _ = cli(capsys, "init")
    assert status == 0
    for name, kind, url, secret in (
        ("oa", "openai", openai_upstream.base_url, OPENAI_KEY),
        ("claude", "anthropic", f"http://127.0.0.1:{anthropic_upstream.port}", ANTHROPIC_KEY),
    ):
        assert (
            cli(capsys, "providers", "add", name, "--kind", kind, "--base-url", url, "--api-key-stdin", stdin=secret)[0]
            == 0
        )
    assert cli(capsys, "prices", "set", "oa/gpt-4o-mini", "--input", "0.15", "--output", "0.6")[0] == 0
    assert cli(capsys, "aliases", "set", "fast", "oa/gpt-4.1")[0] == 0
    return str(initialised["admin_key"])


def test_cli_json_lists_and_marks_the_providers_models(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, document, _ = cli(capsys, "models", "discover", "oa")
    assert status == 0
    assert document == {
        "provider": "oa",
        "kind": "openai",
        "enabled": True,
        "billing_mode": "track",
        "price_book_version": 1,
        "counts": {"listed": 3, "priced": 1, "routable": 2, "unpriced": 2},
        "data": [
            {
                "model": "oa/gpt-4.1",
                "upstream_model": "gpt-4.1",
                "mark": "routable",
                "priced": False,
                "routable": True,
                "aliases": ["fast"],
                "provider_details": {"created": 1_700_000_000, "owned_by": "system"},
            },
            {
                "model": "oa/gpt-4o-mini",
                "upstream_model": "gpt-4o-mini",
                "mark": "priced",
                "priced": True,
                "routable": True,
                "aliases": [],
                "provider_details": {"created": 1_700_000_000, "owned_by": "system"},
            },
            {
                "model": "oa/o3",
                "upstream_model": "o3",
                "mark": "unpriced",
                "priced": False,
                "routable": False,
                "aliases": [],
                "provider_details": {"created": 1_700_000_000, "owned_by": "system"},
            },
        ],
    }


def test_cli_pages_anthropic_and_shows_its_token_limits(
    store: str, capsys: pytest.CaptureFixture[str], anthropic_upstream: FakeAnthropicModelList
) -> None:
    status, document, _ = cli(capsys, "models", "discover", "claude")
    assert status == 0 and len(anthropic_upstream.requests) == 2
    assert [row["model"] for row in document["data"]] == [f"claude/claude-test-{i}" for i in range(3)]
    assert {(row["context_window"], row["max_output_tokens"]) for row in document["data"]} == {(200_000, 64_000)}
    capsys.readouterr()
    assert main(["models", "discover", "claude"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("provider claude (anthropic): 3 models listed, 0 priced, 0 routable, 3 unpriced")
    assert "unpriced  claude/claude-test-0  context 200000  output 64000" in text


def test_a_refused_credential_is_a_cli_error_naming_provider_and_status_without_the_secret(
    store: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    openai_upstream: FakeOpenAIModelList,
) -> None:
    caplog.set_level(logging.DEBUG)
    openai_upstream.api_key = "sk-proj-the-upstream-now-wants-another"
    status, document, err = cli(capsys, "models", "discover", "oa")
    assert status == 1
    assert document == {
        "error": {
            "message": "provider 'oa' refused the gateway's credential (HTTP 401)",
            "type": "upstream_error",
            "code": "upstream_auth_failed",
        }
    }
    capsys.readouterr()
    assert main(["models", "discover", "oa"]) == 1
    human = capsys.readouterr().err
    assert human == "error: provider 'oa' refused the gateway's credential (HTTP 401)\n"
    seen = json.dumps(document) + err + human + caplog.text
    assert OPENAI_KEY not in seen and OPENAI_KEY[-4:] not in seen


@contextmanager
def gateway() -> Iterator[TestClient]:
    services = build_services(Settings.from_env())
    try:
        with TestClient(create_app(services, run_projections=False)) as http:
            yield http
    finally:
        services.close()


def test_admin_endpoint_answers_the_cli_document(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    _, from_cli, _ = cli(capsys, "models", "discover", "oa")
    with gateway() as http:
        admin = {"authorization": f"Bearer {store}"}
        answer = http.get("/admin/v1/providers/oa/models", headers=admin)
        assert answer.status_code == 200 and answer.json() == from_cli
        assert http.get("/admin/v1/providers/oa/models").status_code == 401
        missing = http.get("/admin/v1/providers/nobody/models", headers=admin)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "provider_not_found"
        assert "/admin/v1/providers/{name}/models" in http.get("/openapi.json").json()["paths"]


def test_admin_endpoint_answers_a_provider_failure_in_the_api_error_shape(
    store: str, caplog: pytest.LogCaptureFixture, openai_upstream: FakeOpenAIModelList
) -> None:
    caplog.set_level(logging.DEBUG)
    openai_upstream.api_key = "sk-proj-the-upstream-now-wants-another"
    with gateway() as http:
        head = http.app.state.services.ledger.recorder.max_notification_id()
        answer = http.get("/admin/v1/providers/oa/models", headers={"authorization": f"Bearer {store}"})
    assert answer.status_code == 502
    error = answer.json()["error"]
    assert (error["code"], error["message"]) == (
        "upstream_auth_failed",
        "provider 'oa' refused the gateway's credential (HTTP 401)",
    )
    assert set(error) >= {"message", "type", "param", "code"}
    assert OPENAI_KEY not in answer.text + caplog.text
    reopened = build_services(Settings.from_env())
    try:
        assert reopened.ledger.recorder.max_notification_id() == head
    finally:
        reopened.close()
