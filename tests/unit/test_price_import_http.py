"""``POST /admin/v1/prices/import`` and ``GET /admin/v1/prices/drift``: the CLI's documents
over HTTP, behind the admin key, with the API's error shape for bad input."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapters.bootstrap import build_services, in_memory_ledger
from adapters.http.app import create_app
from adapters.settings import Settings
from application.ledger import Ledger
from application.prices import Prices
from application.providers import ProviderRegistry
from domain.pricing import ModelPrice
from tests.fakes.clock import FakeClock


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], Ledger]]:
    ledger = in_memory_ledger(clock=FakeClock())
    admin_key = ledger.initialise()
    ProviderRegistry(ledger).register_provider("openai", "openai", base_url=None, region=None, secret="sk-openai-1")
    Prices(ledger).set_price("openai/gpt-4o", ModelPrice(input=1, output=2))
    services = build_services(Settings(data_dir=tmp_path), ledger=ledger)
    with TestClient(create_app(services, run_projections=False)) as http:
        yield http, {"Authorization": f"Bearer {admin_key}"}, ledger


def test_a_dry_run_then_an_import_over_http(admin: Any) -> None:
    http, headers, ledger = admin
    body = {"margin_percent": "25", "dry_run": True}
    dry = http.post("/admin/v1/prices/import", json=body, headers=headers)
    assert dry.status_code == 200, dry.text
    assert (dry.json()["published"], dry.json()["version"]) == (False, 1)
    assert dry.json()["changed"][0]["changes"]["input"] == {"old": "0.000000001", "new": "3.125000000"}
    assert ledger.price_book().latest.number == 1
    done = http.post("/admin/v1/prices/import", json={**body, "dry_run": False}, headers=headers)
    assert done.status_code == 200 and done.json()["version"] == 2
    price = ledger.price_book().latest.price_for("openai/gpt-4o")
    assert price is not None and price.input == 3_125_000_000 and price.source == "genai-prices 0.2.5 openai/gpt-4o"
    drift = http.get("/admin/v1/prices/drift", params={"threshold_percent": "0"}, headers=headers)
    assert drift.status_code == 200 and drift.json()["within_threshold"] == ["openai/gpt-4o"]


def test_bad_input_and_no_key_are_refused(admin: Any) -> None:
    http, headers, _ = admin
    assert http.post("/admin/v1/prices/import", json={"dry_run": True}).status_code == 401
    for body in (
        {"catalog": "/etc/passwd"},
        {"margin_percent": 0.1},
        {"margin_percent": "-5"},
        {"margin_percent": -5},
        {"provider": "nope"},
        {"models": ["openai/not-a-model"]},
    ):
        response = http.post("/admin/v1/prices/import", json=body, headers=headers)
        assert response.status_code == 400, (body, response.text)
        assert set(response.json()["error"]) >= {"message", "type", "code"}
    assert http.get("/admin/v1/prices/drift", params={"days": 0}, headers=headers).status_code == 400
