"""Every page on the seeded read models (SQLite and PostgreSQL): its title, its chart, and
figures that match the read models or the ledger's receipts."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from dashboard.metrics import credits_text
from domain.pricing import ModelPrice, price_usage
from domain.usage import Usage
from tests.dashboard.expected import ReadModelsOf
from tests.dashboard.seed import CLAUDE, GPT, Seeded

OpenPage = Callable[[Seeded, str], AppTest]


def metrics_of(app: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in app.metric}


def table(app: AppTest, *columns: str) -> pd.DataFrame:
    """The first table on the page that has these columns (read-only tables carry no key in AppTest)."""
    for element in app.dataframe:
        if set(columns) <= set(element.value.columns):
            return element.value
    raise AssertionError(f"no table with columns {columns}")


def chart_data(app: AppTest, title: str) -> pd.DataFrame:
    """The rows the chart with this title was drawn from."""
    for chart in app.get("vega_lite_chart"):
        if json.loads(chart.proto.spec).get("title") == title:
            return pa.ipc.open_stream(chart.proto.datasets[0].data.data).read_all().to_pandas()
    raise AssertionError(f"no chart titled {title!r}")


PAGES = {
    "overview": "Overview",
    "accounts": "Accounts",
    "models_and_providers": "Models and providers",
    "request_log": "Requests",
    "pricing": "Pricing",
    "exports": "Exports",
}


@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_shows_its_title_and_a_chart(seeded: Seeded, on_page: OpenPage, page: str) -> None:
    app = on_page(seeded, page)
    assert [t.value for t in app.title] == [PAGES[page]]
    assert len(app.get("vega_lite_chart")) >= 1
    assert not app.error


def test_accounts_show_the_balances_and_open_holds_of_the_read_model(seeded: Seeded, on_page: OpenPage) -> None:
    app = on_page(seeded, "accounts")
    read_models = ReadModelsOf.of(seeded)
    try:
        balances = {b.name: b for b in read_models.balances.list_balances()}
    finally:
        read_models.close()
    balances_shown = table(app, "account", "balance", "held").set_index("account")
    assert set(balances_shown.index) == {"acme", "globex"}
    for name, row in balances.items():
        assert balances_shown.loc[name, "balance"] == credits_text(row.balance)
        assert balances_shown.loc[name, "held"] == credits_text(row.held)
        assert balances_shown.loc[name, "charged_total"] == credits_text(row.charged_total)
    assert balances["acme"].charged_total + balances["globex"].charged_total == sum(r.charge for r in seeded.requests)

    app.selectbox(key="accounts_account").select(str(seeded.account_ids["acme"])).run()
    holds = table(app, "request_id", "amount", "expires_at (UTC)")
    assert list(holds["request_id"]) == [str(seeded.open_hold_request)]


def test_accounts_statement_runs_from_the_opening_to_the_current_balance(seeded: Seeded, on_page: OpenPage) -> None:
    app = on_page(seeded, "accounts")
    app.selectbox(key="accounts_range").select("Last 90 days").run()  # the whole seeded history
    app.selectbox(key="accounts_account").select(str(seeded.account_ids["globex"])).run()
    if importlib.util.find_spec("projections.ledger_entries") is None:
        assert any("ledger-entries read model" in i.value for i in app.info)
        return
    shown = metrics_of(app)
    globex = [r for r in seeded.requests if r.account == "globex"]
    assert shown["Opening balance"] == "0.00"
    assert shown["Movements"] == f"{1 + sum(r.outcome == 'completed' for r in globex):,}"  # the grant, the charges
    assert shown["Closing balance"] == credits_text(10**9 // 25 - sum(r.charge for r in globex))
    assert shown["Closing balance"] == shown["Balance"]
    grants = table(app, "kind", "amount", "balance", "reason")
    assert "grant" in set(grants["kind"])


def test_models_and_providers_sum_to_the_usage_rollups(seeded: Seeded, on_page: OpenPage) -> None:
    app = on_page(seeded, "models_and_providers")
    app.selectbox(key="models_range").select("Last 30 days").run()
    window = app.session_state["models_window"]
    by_model = table(app, "provider", "model", "requests").set_index("model")
    in_window = seeded.in_window(window.since, window.until)
    for model in (GPT, CLAUDE):
        mine = [r for r in in_window if r.model == model]
        assert by_model.loc[model, "requests"] == len(mine)
        assert by_model.loc[model, "failed_requests"] == sum(r.outcome == "failed" for r in mine)
        assert by_model.loc[model, "charge"] == credits_text(sum(r.charge for r in mine))


def test_models_and_providers_show_margins_and_credential_health_from_the_provider_rollups(
    seeded: Seeded, on_page: OpenPage
) -> None:
    app = on_page(seeded, "models_and_providers")
    app.selectbox(key="models_range").select("Last 30 days").run()
    window = app.session_state["models_window"]
    in_window = seeded.in_window(window.since, window.until)
    read_models = ReadModelsOf.of(seeded)
    try:
        rows = read_models.provider_rows(window.since, window.until)
    finally:
        read_models.close()

    margins = table(app, "provider", "model", "provider_cost", "margin").set_index("model")
    for model in (GPT, CLAUDE):
        mine = [r for r in in_window if r.model == model]
        charged, cost = sum(r.charge for r in mine), sum(r.provider_cost or 0 for r in mine)
        assert margins.loc[model, "charged"] == credits_text(charged)
        assert margins.loc[model, "provider_cost"] == credits_text(cost)
        assert margins.loc[model, "margin"] == credits_text(charged - cost)
        assert margins.loc[model, "provider_cost_unknown"] == sum(
            r.outcome == "completed" and r.provider_cost is None for r in mine
        )
    assert margins.loc[CLAUDE, "provider_cost_unknown"] > 0 and margins.loc[GPT, "provider_cost_unknown"] == 0

    health = table(app, "credential_id", "failed_attempts", "failovers")
    tried = [r for r in rows if r.credential_id]
    assert set(zip(health["provider"], health["credential_id"], strict=True)) == {
        (r.provider, r.credential_id) for r in tried
    }
    assert len(set(health["credential_id"])) >= 3  # two OpenAI credentials and the Anthropic one
    failover = next(r for r in seeded.requests if r.request_id == seeded.failover_request)
    expected = int(window.since <= failover.at < window.until)
    assert (health["failed_attempts"].sum(), health["failovers"].sum()) == (expected, expected)
    assert health["completed"].sum() + health["failed"].sum() == sum(
        r.status != 402 for r in in_window
    )  # every request but those refused before any upstream call
    assert len(app.get("vega_lite_chart")) == 4  # spend, statuses, margins, credential health
    lines = chart_data(app, "Failed attempts and failovers per credential")
    assert lines.groupby("metric")["value"].sum().to_dict() == {"failed attempts": expected, "failovers": expected}
    assert set(lines["bucket"]) == set(window.bucket_starts())  # every bucket, zero-filled
    assert set(chart_data(app, "Margin by model")["model"]) == {GPT}  # Claude has no provider-cost rates


def test_requests_filter_in_sql_and_show_a_receipt_with_its_attempts(seeded: Seeded, on_page: OpenPage) -> None:
    app = on_page(seeded, "request_log")
    app.selectbox(key="requests_range").select("Last 30 days").run()
    app.selectbox(key="requests_limit").select(2000).run()
    window = app.session_state["requests_window"]
    in_window = seeded.in_window(window.since, window.until)
    assert app.session_state["requests_rows"] == len(in_window)

    app.selectbox(key="requests_status").select(402).run()
    rows = table(app, "at (UTC)", "status", "account", "latency_ms")
    assert len(rows) == sum(r.status == 402 for r in in_window) > 0
    assert set(rows["account"]) == {"globex"}

    app.selectbox(key="requests_status").select("any").run()
    app.selectbox(key="requests_model").select(CLAUDE).run()
    rows = table(app, "at (UTC)", "status", "account", "latency_ms")
    assert set(rows["model"]) == {CLAUDE} and len(rows) == sum(r.model == CLAUDE for r in in_window)

    app.selectbox(key="requests_model").select("any").run()
    app.number_input(key="requests_min_latency").set_value(2000.0).run()
    slow = table(app, "at (UTC)", "status", "account", "latency_ms")
    assert (slow["latency_ms"] >= 2000.0).all()
    app.number_input(key="requests_min_latency").set_value(0.0).run()

    failover = seeded.failover_request
    assert failover is not None
    app.selectbox(key="requests_receipt").select(str(failover)).run()
    assert not app.exception
    attempts = table(app, "status", "error_code", "credential_id")
    assert list(attempts["status"]) == [503] and list(attempts["error_code"]) == ["upstream_unavailable"]
    cost = table(app, "item", "value").set_index("item")["value"]
    seeded_row = next(r for r in seeded.requests if r.request_id == failover)
    assert cost["charged (credits)"] == credits_text(seeded_row.charge)
    assert cost["input rate"].endswith("per 1M")


def test_pricing_lists_versions_and_its_what_if_reprices_exactly(seeded: Seeded, on_page: OpenPage) -> None:
    app = on_page(seeded, "pricing")
    versions = table(app, "version", "effective at (UTC)")
    assert list(versions["version"]) == [3, 2, 1]
    side = table(app, "model", "changed").set_index("model")
    assert side.loc[GPT, "output v2"] == "8.000000000" and side.loc[GPT, "output v3"] == "10.000000000"
    assert side.loc[GPT, "changed"] == "yes" and side.loc[CLAUDE, "changed"] == ""

    app.selectbox(key="pricing_range").select("Last 30 days").run()
    window = app.session_state["pricing_window"]
    latest = {
        GPT: ModelPrice(input=2 * 10**9, output=10 * 10**9, cached_input=10**9),
        CLAUDE: ModelPrice(input=3 * 10**9, output=15 * 10**9),
    }
    completed = [r for r in seeded.in_window(window.since, window.until) if r.outcome == "completed"]
    read_models = ReadModelsOf.of(seeded)
    try:
        logged = {r.request_id: r for r in read_models.request_rows(window.since, window.until)}
    finally:
        read_models.close()
    expected = sum(
        price_usage(
            latest[r.model],
            Usage(
                input_tokens=logged[r.request_id].input_tokens,
                cached_input_tokens=logged[r.request_id].cached_input_tokens,
                output_tokens=logged[r.request_id].output_tokens,
            ),
        )
        for r in completed
    )
    recorded = sum(r.cost for r in completed)
    assert app.session_state["pricing_whatif"] == {"recorded": recorded, "whatif": expected}
    assert expected > recorded  # the older versions priced GPT output at 8, the latest at 10

    app.text_input(key="pricing_scale").input("2").run()
    assert app.session_state["pricing_whatif"] == {"recorded": recorded, "whatif": 2 * expected}
    app.text_input(key="pricing_scale").input("a lot").run()
    assert ["Cannot re-price" in e.value for e in app.error] == [True]


@pytest.mark.parametrize("kind", ["usage", "requests", "ledger"])
def test_exports_snapshot_manifest_counts_and_sums_the_rows_and_says_it_is_not_recorded(
    seeded: Seeded, on_page: OpenPage, kind: str
) -> None:
    app = on_page(seeded, "exports")
    app.radio(key="exports_kind").set_value(kind).run()
    app.radio(key="exports_format").set_value("jsonl").run()
    assert not app.exception
    window = app.session_state["exports_window"]
    manifest = app.session_state["exports_manifest"]
    in_window = seeded.in_window(window.since, window.until)
    read_models = ReadModelsOf.of(seeded)
    try:
        totals = read_models.totals(window.since, window.until)
        usage, requests = (
            read_models.usage_rows(window.since, window.until),
            read_models.request_rows(window.since, window.until),
        )
    finally:
        read_models.close()
    if kind == "ledger":  # the seeded clock only moves forward: the window cuts the ledger at its bounds' times
        assert manifest["totals"]["kinds"]["charge"] == {
            "count": sum(r.outcome == "completed" for r in in_window),
            "amount": -totals.charge,
            "amount_credits": manifest["totals"]["kinds"]["charge"]["amount_credits"],
        }
        assert manifest["rows"] == sum(k["count"] for k in manifest["totals"]["kinds"].values())
        assert set(manifest["accounts"]) <= {str(a) for a in seeded.account_ids.values()}
    else:
        assert manifest["rows"] == len(usage if kind == "usage" else requests) > 0
        assert manifest["totals"]["charge_nanocredits"] == totals.charge
        assert manifest["totals"]["input_tokens"] == totals.input_tokens
    assert (manifest["from"], manifest["to"]) == (window.since.isoformat(), window.until.isoformat())
    assert manifest["export_id"] is None and manifest["recorded"] is False and manifest["previous_export"] is None
    assert manifest["chain"]["seed"] == "0" * 64 and "not recorded" in manifest["note"]
    assert manifest["record_with"].startswith(f"tallyhub export {kind} --from {window.since:%Y-%m-%dT%H:00:00Z} ")
    assert len(manifest["sha256"]) == 64 and manifest["file"].endswith("-snapshot.jsonl")
    assert any(manifest["record_with"] in w.value and "not recorded" in w.value for w in app.warning)
    assert any("No recorded exports" in i.value for i in app.info)  # none written in this store
    assert [b.label for b in app.get("download_button")] == [f"Download {manifest['file']}", "Download the manifest"]


def test_requests_filter_by_end_user_and_tag_exactly(seeded: Seeded, on_page: OpenPage) -> None:
    app = on_page(seeded, "request_log")
    app.selectbox(key="requests_range").select("Last 30 days").run()
    app.selectbox(key="requests_limit").select(2000).run()
    window = app.session_state["requests_window"]
    in_window = seeded.in_window(window.since, window.until)

    app.text_input(key="requests_user").input("user-1").run()
    rows = table(app, "at (UTC)", "status", "end_user", "tags")
    assert len(rows) == sum(r.user == "user-1" for r in in_window) > 0
    assert set(rows["end_user"]) == {"user-1"}

    app.text_input(key="requests_tag").input("batch").run()  # user-1's requests are all tagged team:web
    assert app.session_state["requests_rows"] == 0
    app.text_input(key="requests_user").input("user-2").run()
    both = [r for r in in_window if r.user == "user-2" and "batch" in r.tags]
    assert app.session_state["requests_rows"] == len(both) > 0

    app.text_input(key="requests_user").input("").run()
    rows = table(app, "at (UTC)", "status", "end_user", "tags")
    assert len(rows) == sum("batch" in r.tags for r in in_window) > 0
    assert all("batch" in tags.split(",") for tags in rows["tags"])

    app.text_input(key="requests_tag").input("team").run()  # a prefix of a tag matches nothing
    assert app.session_state["requests_rows"] == 0


def test_usage_by_model_filtered_by_end_user_or_tag_sums_exactly_those_requests(
    seeded: Seeded, on_page: OpenPage
) -> None:
    app = on_page(seeded, "models_and_providers")
    app.selectbox(key="models_range").select("Last 30 days").run()
    window = app.session_state["models_window"]
    in_window = seeded.in_window(window.since, window.until)

    for field, value, keep in (
        ("models_tag", "team:web", lambda r: "team:web" in r.tags),
        ("models_user", "user-3", lambda r: "team:web" in r.tags and r.user == "user-3"),
    ):
        app.text_input(key=field).input(value).run()
        assert not app.exception
        matching = [r for r in in_window if keep(r)]
        by_model = table(app, "provider", "model", "requests").set_index("model")
        assert by_model["requests"].sum() == len(matching) > 0
        for model in set(by_model.index):
            mine = [r for r in matching if r.model == model]
            assert by_model.loc[model, "requests"] == len(mine)
            assert by_model.loc[model, "failed_requests"] == sum(r.outcome == "failed" for r in mine)
            assert by_model.loc[model, "charge"] == credits_text(sum(r.charge for r in mine))
