"""Console: the prices page (dashboard/console/pages/prices.py) on SQLite and PostgreSQL.
A version proposed from the form, a price file or the genai-prices import is reviewed as a
diff against the latest version and published only on "Publish"; the published rates are
the exact nanocredits the CLI's helpers give, and the event names the admin."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from adapters.catalogs import GENAI_PRICES, open_catalog
from adapters.cli.price_import_commands import run_import
from adapters.services import Services
from application.acting import admin_actor
from application.price_import import Markup
from application.pricing_input import parse_price_file, price_from_credits, price_from_entry
from domain import ids
from domain.errors import InvalidRequest
from domain.money import format_credits
from domain.pricing import ModelPrice
from tests.dashboard.console_fixtures import application, console, console_store, last_actor  # noqa: F401
from tests.dashboard.seed import Seeded

Console = Callable[..., AppTest]
Application = Callable[[Seeded], Services]
GPT = "openai/gpt-test"
CLAUDE = "anthropic/claude-test"
NANO = 10**9


def priced_store(store: Seeded, application: Application) -> Services:
    """Two providers and version 1: GPT at input 2, output 8 (the CLI's actor, not the admin's)."""
    services = application(store)
    registry = services.provider_registry
    registry.register_provider("openai", "openai", base_url="http://127.0.0.1:9/v1", region=None, secret="sk-a-0001")
    registry.register_provider("anthropic", "anthropic", base_url="http://127.0.0.1:9", region=None, secret="sk-b-0002")
    assert services.prices.set_price(GPT, price_from_credits(input="2", output="8")) == 1
    return services


def latest(services: Services) -> tuple[int, dict[str, ModelPrice]]:
    book = services.ledger.price_book().latest
    return book.number, {model: ModelPrice.from_dict(data) for model, data in book.prices.items()}


def diff_rows(app: AppTest) -> list[dict[str, Any]]:
    frames = [d.value for d in app.dataframe if "change" in d.value.columns]
    return frames[0].to_dict("records") if frames else []


def texts(elements: Any) -> list[str]:
    return [e.value for e in elements]


def fill_form(app: AppTest, model: str, **rates: str) -> AppTest:
    app.text_input(key="price_form_model").input(model)
    for name, value in rates.items():
        app.text_input(key=f"price_form_{name}").input(value)
    app.button(key="price_form_review").click().run()
    assert not app.exception, app.exception
    return app


def test_a_price_from_the_form_is_published_exactly_only_after_its_diff_and_publish(
    console_store: Seeded, console: Console, application: Application
) -> None:
    services = priced_store(console_store, application)
    app = fill_form(
        console(console_store, "prices"),
        GPT,
        input="2.5",
        output="99999.999999999",
        cached_input="0.000000001",
        cost_input="1",
        cost_output="4",
    )
    assert not texts(app.error), texts(app.error)
    assert "against version 1: 0 added, 1 changed, 0 removed, 0 unchanged" in " ".join(texts(app.markdown))
    assert diff_rows(app) == [
        {"model": GPT, "change": "changed", "field": name, "old": old, "new": new}
        for name, old, new in (
            ("cached_input", "unset", "0.000000001"),
            ("input", "2.000000000", "2.500000000"),
            ("output", "8.000000000", "99999.999999999"),
            ("provider_cost.input", "unset", "1.000000000"),
            ("provider_cost.max_output_tokens", "unset", "4096"),
            ("provider_cost.output", "unset", "4.000000000"),
            ("provider_cost.per_image", "unset", "0.000000000"),
            ("provider_cost.per_request", "unset", "0.000000000"),
        )
    ]
    assert latest(services)[0] == 1  # reviewed, not published

    app.button(key="price_publish").click().run()
    assert texts(app.success) == ["Published price-book version 2 (1 models), effective now."]
    version, prices = latest(services)
    price = prices[GPT]
    assert version == 2
    assert (price.input, price.output, price.cached_input) == (5 * NANO // 2, 99_999_999_999_999, 1)
    assert price.provider_cost is not None
    assert (price.provider_cost.input, price.provider_cost.output) == (NANO, 4 * NANO)
    assert price == price_from_entry(
        {
            "input": "2.5",
            "output": "99999.999999999",
            "cached_input": "0.000000001",
            "provider_cost": {"input": "1", "output": "4"},
        }
    )
    assert last_actor(services, ids.PRICE_BOOK_ID) == admin_actor(console_store.admin_key)
    assert diff_rows(app) == []  # the review is done


def test_nothing_is_published_when_the_review_is_cancelled_or_the_input_refused(
    console_store: Seeded, console: Console, application: Application
) -> None:
    services = priced_store(console_store, application)
    app = fill_form(console(console_store, "prices"), CLAUDE, input="3", output="15")
    assert [r["change"] for r in diff_rows(app)] == ["added"] * len(diff_rows(app)) and diff_rows(app)
    app.button(key="price_cancel").click().run()
    assert texts(app.success) == ["Nothing was published."] and diff_rows(app) == []
    assert latest(services)[0] == 1

    with pytest.raises(InvalidRequest) as refused:
        price_from_entry({"input": "3", "output": "fifteen"})
    fill_form(app, CLAUDE, output="fifteen")
    assert texts(app.error) == [str(refused.value)]
    fill_form(app, "claude-test", output="15")
    assert texts(app.error) == ["a model id is PROVIDER/MODEL, got 'claude-test'"]
    fill_form(app, GPT, input="2", output="8")  # the same as version 1
    assert texts(app.error) == ["Nothing changes against version 1: nothing to publish."]
    assert diff_rows(app) == [] and latest(services)[0] == 1


def test_a_review_made_stale_by_another_publish_publishes_nothing(
    console_store: Seeded, console: Console, application: Application
) -> None:
    services = priced_store(console_store, application)
    app = fill_form(console(console_store, "prices"), GPT, input="3", output="9")
    assert services.prices.set_price(CLAUDE, price_from_credits(input="3", output="15")) == 2  # meanwhile, the CLI
    app.button(key="price_publish").click().run()
    assert texts(app.error) == [
        "The price book changed since this review (it is now at version 2): review again. Nothing was published."
    ]
    version, prices = latest(services)
    assert version == 2 and prices[GPT] == price_from_credits(input="2", output="8")


def test_an_uploaded_price_file_shows_added_changed_and_removed_then_publishes_for_later(
    console_store: Seeded, console: Console, application: Application
) -> None:
    services = priced_store(console_store, application)
    assert services.prices.set_price("openai/gpt-old", price_from_credits(input="1", output="1")) == 2
    document = {
        "effective_at": "2030-01-01T00:00:00Z",
        "models": {
            GPT: {"input": "2", "output": "10"},
            CLAUDE: {"input": "3", "output": "15", "cache_write": "3.75"},
        },
    }
    app = console(console_store, "prices")
    app.file_uploader(key="price_file").upload("prices.json", json.dumps(document).encode(), "application/json")
    app.button(key="price_file_review").click().run()
    assert not texts(app.error), texts(app.error)
    rows = diff_rows(app)
    assert {(r["model"], r["change"]) for r in rows} == {
        (CLAUDE, "added"),
        (GPT, "changed"),
        ("openai/gpt-old", "removed"),
    }
    assert [r for r in rows if r["model"] == GPT] == [
        {"model": GPT, "change": "changed", "field": "output", "old": "8.000000000", "new": "10.000000000"}
    ]
    assert {"model": CLAUDE, "change": "added", "field": "cache_write_5m", "old": "—", "new": "3.750000000"} in rows
    assert latest(services)[0] == 2

    app.button(key="price_publish").click().run()
    assert texts(app.success) == ["Published price-book version 3 (2 models), effective 2030-01-01 00:00:00 UTC."]
    book = services.ledger.price_book()
    assert book.latest.number == 3 and book.latest.effective_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert book.effective(services.ledger.clock.now()).number == 2  # in effect only from 2030
    expected, _ = parse_price_file(json.dumps(document))
    assert {m: ModelPrice.from_dict(d) for m, d in book.latest.prices.items()} == expected
    assert last_actor(services, ids.PRICE_BOOK_ID) == admin_actor(console_store.admin_key)


def test_a_price_file_the_cli_would_refuse_shows_its_message(
    console_store: Seeded, console: Console, application: Application
) -> None:
    services = priced_store(console_store, application)
    app = console(console_store, "prices")
    for text in (
        '{"models": {"openai/gpt-test": {"input": 1.5, "output": "2"}}}',
        '{"models": {"nope/x": {"input": "1", "output": "2"}}}',
    ):
        app.file_uploader(key="price_file").upload("prices.json", text.encode(), "application/json")
        app.button(key="price_file_review").click().run()
        try:
            services.ledger.check_models_known(parse_price_file(text)[0])
        except InvalidRequest as refused:
            assert texts(app.error) == [str(refused)]
        else:
            raise AssertionError("the application accepted " + text)
        assert diff_rows(app) == []
    assert latest(services)[0] == 1


def test_the_genai_prices_import_is_its_dry_run_until_published(
    console_store: Seeded, console: Console, application: Application
) -> None:
    services = priced_store(console_store, application)
    model = "openai/gpt-4o-mini"
    assert services.prices.set_price(model, price_from_credits(input="1", output="1")) == 2
    app = console(console_store, "prices")
    for margin, message in (
        ("twenty", "expected a percentage, got 'twenty'"),
        ("-5", "the margin must be a percentage from 0 to 10000"),
    ):
        app.text_input(key="price_import_margin").input(margin)
        app.button(key="price_import_review").click().run()
        assert texts(app.error) == [message] and diff_rows(app) == []
    app.text_input(key="price_import_margin").input("20")
    app.selectbox(key="price_import_provider").select("openai")
    app.text_input(key="price_import_models").input(model)
    app.button(key="price_import_review").click().run()
    assert not texts(app.error), texts(app.error)
    planned = run_import(
        services, open_catalog(GENAI_PRICES), Markup(Decimal(20)), provider="openai", models=[model], dry_run=True
    )
    new = planned.prices[model]
    assert {r["model"] for r in diff_rows(app)} == {model}
    assert {
        "model": model,
        "change": "changed",
        "field": "input",
        "old": "1.000000000",
        "new": format_credits(new.input),
    } in diff_rows(app)
    assert latest(services)[0] == 2

    app.button(key="price_publish").click().run()
    assert texts(app.success) == ["Published price-book version 3 (2 models), effective now."]
    version, prices = latest(services)
    assert version == 3 and prices[model] == new and prices[GPT] == price_from_credits(input="2", output="8")
    assert new.provider_cost is not None and new.input * 5 == new.provider_cost.input * 6  # cost + 20 %
    assert last_actor(services, ids.PRICE_BOOK_ID) == admin_actor(console_store.admin_key)
