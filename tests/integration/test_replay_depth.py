"""Replay and verify over a history holding every pricing case of issue 16, on a real store
(SQLite and PostgreSQL): cached and reasoning tokens, 5-minute and 1-hour cache writes (and a
total-only write, flagged), web searches, service tiers answered and not, a long prompt above
and exactly at a context tier's threshold, images with and without tokens, an estimate capped
at max_tokens, derived counts, and a clamped report. The charges go through RequestBilling
(the path serve takes); replaying the same price file differs by exactly 0 on every line,
a changed file by exactly its recomputation, and verify recomputes every cost."""

import json
import os
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.crypto.aes_gcm import AesGcmKeyVault
from adapters.crypto.key_digest import HmacApiKeyScheme
from adapters.http.errors import status_of
from adapters.settings import DatabaseConfig, parse_database_url
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.billing import RequestBilling, RequestShape
from application.health import CredentialHealth
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import parse_price_file
from application.providers import ProviderRegistry
from application.replay import Replayer, ReplayPlan
from application.routing import Router
from application.verify import LedgerVerifier
from domain.pricing import price_usage
from domain.request_record import RequestRecord
from domain.usage import Usage
from domain.usage_bounds import INPUT_OVERHEAD_TOKENS
from projections.read_models import build_read_models
from tests.conftest import PgSchemas
from tests.support.routes import first_route

GPT, CLAUDE, GEMINI, IMAGE = "openai/gpt-5", "anthropic/claude-sonnet-4", "gemini/gemini-2.5-pro", "openai/gpt-image-1"
PRICES = {
    "models": {
        GPT: {
            "input": "1.25",
            "cached_input": "0.125",
            "output": "10",
            "per_request": "0.000001",
            "service_tiers": {"flex": {"input": "0.625", "output": "5"}, "priority": {"input": "2.5", "output": "20"}},
        },
        CLAUDE: {"input": "3", "cached_input": "0.3", "output": "15", "cache_write_1h": "6", "per_web_search": "0.01"},
        GEMINI: {
            "input": "1.25",
            "cached_input": "0.3125",
            "output": "10",
            "context_tiers": [{"above_input_tokens": 200000, "input": "2.5", "cached_input": "0.625", "output": "15"}],
        },
        IMAGE: {"input": "5", "output": "40", "per_image": "0.04"},
    }
}
PROMPT_BYTES = 1_100_000
MAX_TOKENS = 10_000

HISTORY: list[tuple[str, Usage]] = [
    (GPT, Usage(input_tokens=1000, cached_input_tokens=800, output_tokens=200, reasoning_tokens=150)),
    (CLAUDE, Usage(input_tokens=6 + 159_217, cache_write_5m_tokens=159_217, output_tokens=2745)),
    (CLAUDE, Usage(input_tokens=1_000_000, cache_write_1h_tokens=600_000, cache_write_5m_tokens=400_000)),
    (
        CLAUDE,
        Usage(input_tokens=5000, cache_write_5m_tokens=4000, output_tokens=10, flags=("cache_write_ttl_assumed",)),
    ),
    (CLAUDE, Usage(input_tokens=300, output_tokens=900, web_search_calls=3, service_tier="standard")),
    (GEMINI, Usage(input_tokens=250_000, cached_input_tokens=100_000, output_tokens=8500, reasoning_tokens=8000)),
    (GEMINI, Usage(input_tokens=200_000, output_tokens=10)),
    (GPT, Usage(input_tokens=1000, output_tokens=100, service_tier="default")),  # asked priority, got default
    (GPT, Usage(input_tokens=1000, output_tokens=100, service_tier="priority")),
    (GPT, Usage(input_tokens=1000, cached_input_tokens=10, output_tokens=100, service_tier="flex")),
    (IMAGE, Usage(images=2)),
    (IMAGE, Usage(input_tokens=50, output_tokens=4160, images=1)),
    (GPT, Usage(input_tokens=40, output_tokens=MAX_TOKENS, source="estimated", flags=("output_capped",))),
    (GPT, Usage(input_tokens=12, output_tokens=7, flags=("field_invalid", "total_derived"))),
    # reported beyond the request's bounds: charged clamped, the report kept
    (CLAUDE, Usage(input_tokens=3 * 10**6, cache_write_1h_tokens=3 * 10**6, output_tokens=10**6, web_search_calls=500)),
]


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path, pg_schemas: PgSchemas) -> DatabaseConfig:
    return parse_database_url(pg_schemas.new_url() if request.param == "postgres" else None, tmp_path)


@pytest.fixture
def ledger(database: DatabaseConfig) -> Iterator[Ledger]:
    app = Ledger(
        database.eventsourcing_env(create_tables=True),
        vault=AesGcmKeyVault(os.urandom(32)),
        key_scheme_factory=HmacApiKeyScheme,
    )
    app.initialise()
    for name in ("openai", "anthropic", "gemini"):
        ProviderRegistry(app).register_provider(name, name, base_url=None, region=None, secret=f"sk-{name}-secret-0001")
    prices, _ = parse_price_file(json.dumps(PRICES))
    Prices(app).publish_prices(prices)
    Accounts(app).create_account("acme")
    Accounts(app).grant_credits("acme", 10**16)
    key = ApiKeys(app).issue_api_key("acme").plaintext
    billing = RequestBilling(
        app, Router(app, CredentialHealth()), mode="credits", hold_ttl=timedelta(minutes=5), status_of=status_of
    )
    for model, usage in HISTORY:
        shape = RequestShape(
            model=model, prompt_bytes=PROMPT_BYTES, max_output_tokens=MAX_TOKENS, choices=1, stream=False, images=2
        )
        opened = billing.open_request(key, shape)
        billing.complete_request(opened, first_route(billing, opened), usage)
    yield app
    app.close()


def charged_usages(ledger: Ledger) -> list[tuple[str, Usage]]:
    """(model, usage charged) of every completed record, as stored."""
    found = []
    for notification in ledger.recorder.select_notifications(start=1, limit=10_000):
        if notification.topic.endswith("RequestRecord.Completed"):
            record = ledger.repository.get(notification.originator_id)
            assert isinstance(record, RequestRecord) and record.details.usage is not None
            found.append((record.details.model, record.details.usage))
    return found


def test_replaying_the_same_prices_over_every_case_differs_by_exactly_zero(ledger: Ledger) -> None:
    prices, _ = parse_price_file(json.dumps(PRICES))
    charged = charged_usages(ledger)
    assert [usage for _, usage in charged][:-1] == [usage for _, usage in HISTORY][:-1]  # stored as reported
    clamped = charged[-1][1]
    assert clamped.source == "clamped" and clamped.input_tokens == PROMPT_BYTES + INPUT_OVERHEAD_TOKENS
    assert clamped.cache_write_1h_tokens == clamped.input_tokens and clamped.web_search_calls == 100
    assert clamped.output_tokens == MAX_TOKENS
    assert len({price_usage(prices[model], usage) for model, usage in charged}) == len(charged)  # all distinct

    report = Replayer(ledger).preview(ReplayPlan(prices))
    assert report.charges == len(HISTORY)
    assert [line.difference for line in report.lines] == [0] * 4
    assert report.difference == 0
    assert sum(line.old for line in report.lines) == sum(price_usage(prices[m], u) for m, u in charged)


def test_a_changed_price_file_replays_to_exactly_its_recomputation_and_verify_passes(
    ledger: Ledger, database: DatabaseConfig
) -> None:
    changed = json.loads(json.dumps(PRICES))
    changed["models"][GEMINI]["context_tiers"][0]["output"] = "18"
    changed["models"][CLAUDE]["cache_write"] = "4"
    changed["models"][CLAUDE]["per_web_search"] = "0.02"
    changed["models"][GPT]["service_tiers"]["priority"]["output"] = "25"
    old, _ = parse_price_file(json.dumps(PRICES))
    new, _ = parse_price_file(json.dumps(changed))
    charged = charged_usages(ledger)
    expected = sum(price_usage(new[m], u) - price_usage(old[m], u) for m, u in charged)
    assert expected > 0
    balance = ledger.get_account("acme").balance

    report = Replayer(ledger).apply(ReplayPlan(new))
    assert report.difference == expected
    assert ledger.get_account("acme").balance == balance - expected
    assert Replayer(ledger).preview(ReplayPlan(new)).difference == 0

    read_models = build_read_models(database, ledger)
    read_models.create_tables()
    try:
        assert LedgerVerifier(ledger, read_models).verify().problems == []
    finally:
        read_models.close()


def test_verify_names_a_record_whose_stored_cache_writes_no_longer_match_its_cost(
    ledger: Ledger, database: DatabaseConfig
) -> None:
    """verify prices each record's usage (cache writes included) under its version: a record
    whose stored usage lost its cache writes is named."""
    if database.kind != "sqlite":
        pytest.skip("edits the SQLite file behind the ledger's back")
    with sqlite3.connect(database.sqlite_path) as conn:
        rows = conn.execute("SELECT rowid, state FROM stored_events WHERE topic LIKE '%RequestRecord.Completed'")
        edited = [
            (state.replace(b',"cache_write_5m_tokens":159217', b""), rowid)
            for rowid, state in rows.fetchall()
            if b'"cache_write_5m_tokens":159217' in state
        ]
        assert len(edited) == 1
        conn.executemany("UPDATE stored_events SET state = ? WHERE rowid = ?", edited)
    if ledger.repository.cache:
        ledger.repository.cache.clear()
    read_models = build_read_models(database, ledger)
    read_models.create_tables()
    try:
        problems = LedgerVerifier(ledger, read_models).verify().problems
    finally:
        read_models.close()
    assert len(problems) == 1 and "is not its usage priced under version 1" in problems[0], problems
