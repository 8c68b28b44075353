"""The admin-key gate, and the Overview's figures against the read models (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from adapters.crypto.master_key import create_master_key_file
from adapters.settings import Settings
from dashboard.metrics import credits_text
from dashboard.windows import Window
from tests.conftest import PgSchemas
from tests.dashboard.conftest import BACKENDS, database_url, enter_key
from tests.dashboard.expected import ReadModelsOf, percentile
from tests.dashboard.seed import Seeded

Start = Callable[..., AppTest]


def charts_of(app: AppTest) -> int:
    return len(app.get("vega_lite_chart"))


def metrics_of(app: AppTest) -> dict[str, tuple[str, str]]:
    return {m.label: (m.value, m.proto.delta) for m in app.metric}


def test_nothing_but_the_sign_in_form_is_shown_before_the_admin_key(seeded: Seeded, dashboard: Start) -> None:
    app = dashboard(seeded, sign_in=False)
    assert [t.value for t in app.title] == ["Tallyhub dashboard"]
    assert (len(app.metric), charts_of(app), len(app.dataframe)) == (0, 0, 0)
    # no other page is even registered but the customer portal's sign-in (/portal)
    with pytest.raises(ValueError, match=r"Known pages: \['Sign in', '[^']*/dashboard/portal/sign_in\.py'\]"):
        app.switch_page("analytics/accounts.py")


def test_a_wrong_admin_key_is_refused_and_shows_nothing(seeded: Seeded, dashboard: Start) -> None:
    app = enter_key(dashboard(seeded, sign_in=False), "tha_not-the-admin-key")
    assert not app.exception
    assert ["That is not the admin key" in e.value for e in app.error] == [True]
    assert [t.value for t in app.title] == ["Tallyhub dashboard"]
    assert (len(app.metric), charts_of(app)) == (0, 0)
    enter_key(app, "")
    assert [t.value for t in app.title] == ["Tallyhub dashboard"]


def test_the_key_from_tallyhub_admin_key_is_accepted_too(seeded: Seeded, dashboard: Start) -> None:
    app = dashboard(
        seeded, sign_in=False, extra_env={"TALLYHUB_ADMIN_KEY": "operator-chosen-admin-key-at-least-32-characters"}
    )
    enter_key(app, "operator-chosen-admin-key-at-least-32-characters")
    assert [t.value for t in app.title] == ["Overview"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_store_never_initialised_says_run_tallyhub_init_and_creates_nothing(
    backend: str, tmp_path: Path, pg_schemas: PgSchemas, dashboard: Start
) -> None:
    data_dir = tmp_path / "never-initialised"
    create_master_key_file(data_dir / "master.key")  # so the dashboard gets as far as the database
    nowhere = Seeded(
        Settings(data_dir=data_dir, database_url=database_url(backend, pg_schemas)),
        "tha_whatever",
        datetime.now(UTC),
    )
    app = enter_key(dashboard(nowhere, sign_in=False), "tha_whatever")
    assert not app.exception
    assert ["cannot be opened" in e.value for e in app.error] == [True]
    assert any("tallyhub init" in i.value for i in app.info)
    assert [t.value for t in app.title] == ["Tallyhub dashboard"]
    assert sorted(p.name for p in data_dir.iterdir()) == ["master.key"]  # no stray database file


def test_an_empty_store_shows_what_to_do_on_every_page(empty: Seeded, dashboard: Start) -> None:
    app = dashboard(empty)
    assert any("No requests recorded yet" in i.value for i in app.info)
    for page, expected in (
        ("accounts", "No accounts yet"),
        ("models_and_providers", "No requests recorded yet"),
        ("request_log", "No requests recorded yet"),
        ("pricing", "No price-book version yet"),
        ("exports", "No requests recorded yet"),
    ):
        app.switch_page(f"analytics/{page}.py").run()
        assert not app.exception, (page, app.exception)
        assert any(expected in i.value for i in app.info), (page, [i.value for i in app.info])
        assert charts_of(app) == 0


@pytest.mark.parametrize("time_range", ["Last 24 hours", "Last 7 days", "Last 30 days", "Custom days"])
def test_overview_figures_equal_the_read_model_sums_for_the_same_window(
    seeded: Seeded, dashboard: Start, time_range: str
) -> None:
    app = dashboard(seeded)
    app.selectbox(key="overview_range").select(time_range).run()
    if time_range == "Custom days":
        today = seeded.now.date()
        app.date_input(key="overview_days").set_value((today - timedelta(days=10), today - timedelta(days=1))).run()
    assert not app.exception
    window: Window = app.session_state["overview_window"]
    shown = metrics_of(app)
    read_models = ReadModelsOf.of(seeded)
    try:
        totals = read_models.totals(window.since, window.until)
        previous = read_models.totals(window.previous.since, window.previous.until)
        rows = read_models.usage_rows(window.since, window.until)
        requests = read_models.request_rows(window.since, window.until)
        previous_requests = read_models.request_rows(window.previous.since, window.previous.until)
        providers = read_models.provider_totals(window.since, window.until)
        previous_providers = read_models.provider_totals(window.previous.since, window.previous.until)
    finally:
        read_models.close()

    # the usage rollups' sums, the sum of their rows, the request log and the ledger's receipts all agree
    ledger_side = seeded.in_window(window.since, window.until)
    assert totals.requests == sum(r.requests for r in rows) == len(requests) == len(ledger_side) > 0
    assert (
        totals.charge
        == sum(r.charge for r in rows)
        == sum(r.charge for r in requests)
        == sum(r.charge for r in ledger_side)
    )
    assert totals.failed_requests == sum(r.outcome != "completed" for r in requests)

    assert shown["Requests"] == (f"{totals.requests:,}", f"{totals.requests - previous.requests:+,}")
    assert shown["Tokens"][0] == f"{totals.input_tokens + totals.output_tokens:,}"
    assert shown["Spend (credits)"][0] == credits_text(totals.charge)
    assert Decimal(shown["Spend (credits)"][0]) * 10**9 == totals.charge  # exact, no float on the way
    assert shown["Error rate"][0] == f"{100 * totals.failed_requests / totals.requests:.2f}%"

    completed = [r for r in requests if r.outcome == "completed"]
    before = [r for r in previous_requests if r.outcome == "completed"]
    for label, values, earlier in (
        ("p50 latency", [r.latency_ms for r in completed], [r.latency_ms for r in before]),
        ("p95 latency", [r.latency_ms for r in completed], [r.latency_ms for r in before]),
        (
            "p50 time to first byte",
            [r.ttfb_ms for r in completed if r.ttfb_ms is not None],
            [r.ttfb_ms for r in before if r.ttfb_ms is not None],
        ),
        (
            "p95 time to first byte",
            [r.ttfb_ms for r in completed if r.ttfb_ms is not None],
            [r.ttfb_ms for r in before if r.ttfb_ms is not None],
        ),
    ):
        q = 0.5 if label.startswith("p50") else 0.95
        now_value, then_value = percentile(values, q), percentile(earlier, q)
        assert shown[label][0] == ("—" if now_value is None else f"{now_value:,.1f} ms"), label
        if now_value is not None and then_value is not None:
            assert shown[label][1] == f"{now_value - then_value:+,.1f} ms", label

    # provider cost and margin: the provider rollups' sums, equal to the billed records' own figures
    provider_cost = sum(r.provider_cost or 0 for r in ledger_side)
    assert providers.charged == totals.charge and providers.provider_cost == provider_cost > 0
    assert (
        providers.provider_cost_unknown
        == sum(r.outcome == "completed" and r.provider_cost is None for r in ledger_side)
        > 0
    )  # Claude has no provider-cost rates
    margin = totals.charge - provider_cost
    previous_margin = previous_providers.charged - previous_providers.provider_cost
    assert shown["Provider cost (credits)"][0] == credits_text(provider_cost)
    assert Decimal(shown["Margin (credits)"][0]) * 10**9 == margin
    assert shown["Margin (credits)"][1] == ("+" if margin >= previous_margin else "-") + credits_text(
        abs(margin - previous_margin)
    )
    assert shown["Margin rate"][0] == f"{100 * margin / totals.charge:.2f}%"
    assert shown["Failovers"][0] == str(sum(r.request_id == seeded.failover_request for r in ledger_side))
    assert f"{providers.provider_cost_unknown:,} completed requests were priced without provider-cost rates" in (
        " ".join(c.value for c in app.caption)
    )
    assert charts_of(app) == 7
