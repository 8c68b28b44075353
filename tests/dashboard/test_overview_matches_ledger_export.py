"""The Overview's numbers against a real ledger export (``tallyhub export ledger``) of the
same window, and the Exports page's recorded exports and snapshots — on SQLite and on
PostgreSQL.

The rule tested (and stated in the Overview's caption and docs/operations.md, Dashboard): in credits mode the
Overview's *Spend* is minus the sum of the export's ``charge`` rows, its completed requests
are their count, and its list price is that sum plus their ``uncollected``; refunds and
adjustments are rows of their own that Spend does not net. In track mode nothing is charged
to the ledger: Spend is the list price and the export has no charge rows.

The seeded history is extended with a refund, a debit adjustment and a charge that could
not be collected in full (its hold expired, then the balance was spent), all stamped after
every other movement, so the seeded ledger's times rise with its positions and a window's
cut by time is exact.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from streamlit.testing.v1 import AppTest

from adapters.bootstrap import build_ledger, build_read_models, build_services
from adapters.exports.checks import check_export
from adapters.exports.datasets import LEDGER_FIELDS
from adapters.exports.exporter import manifest_path
from adapters.exports.formats import FORMATS
from adapters.http.errors import status_of
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.billing import RequestBilling, RequestShape
from application.health import CredentialHealth
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from application.routing import Router
from dashboard import export_files
from dashboard.metrics import credits_text
from dashboard.queries import Views
from dashboard.windows import Window
from domain.account import Account
from domain.usage import Usage
from projections.balances import SqlBalancesView
from projections.ledger_entries import SqlLedgerEntriesView
from projections.request_log import SqlRequestLogView
from projections.store import PostgresStore, SqliteStore, SqlStore
from projections.usage import SqlUsageView
from tests.conftest import PgSchemas
from tests.dashboard.conftest import BACKENDS, database_url
from tests.dashboard.seed import GPT, NANO, Seeded, SeededRequest, empty_store, seed_store
from tests.fakes.clock import FakeClock
from tests.support.event_times import events_stamped_by
from tests.support.gateway import cli

Start = Callable[..., AppTest]
RANGES = ["Last 24 hours", "Last 7 days", "Last 30 days", "Custom days"]


@dataclass
class Billed:
    store: Seeded
    refunded: int = 0  # nanocredits given back by the refund
    adjusted: int = 0  # the debit adjustment (negative)
    uncollected: int = 0  # what the last charge could not take
    extras_at: list[datetime] = field(default_factory=list)


@pytest.fixture(scope="module", params=BACKENDS)
def billed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pg_schemas: PgSchemas) -> Billed:
    store = seed_store(
        tmp_path_factory.mktemp(f"overview-ledger-{request.param}") / "data", database_url(request.param, pg_schemas)
    )
    return _refund_adjust_and_undercollect(store)


def _refund_adjust_and_undercollect(store: Seeded) -> Billed:
    billed = Billed(store)
    last_movement = max(r.at for r in store.requests)
    step = (store.now - last_movement) / 5
    clock = FakeClock(last_movement + step)
    with events_stamped_by(clock.now):
        ledger = build_ledger(store.settings, clock=clock)
        try:
            ledger.load_deployment()
            refunded = next(r for r in store.requests if r.account == "acme" and r.charge > 2)
            billed.refunded = refunded.charge // 2
            ledger.change_account(
                store.account_ids["acme"], lambda account: _refund(account, refunded.request_id, billed.refunded)
            )
            billed.extras_at.append(clock.current)
            clock.current += step
            billed.adjusted = Accounts(ledger).adjust_credits("acme", -NANO // 100, reason="correction").amount
            billed.extras_at.append(clock.current)
            clock.current += step
            store.requests.append(_undercollected(store, ledger, clock, billed))
            billed.extras_at.append(clock.current)
            read_models = build_read_models(store.settings, ledger)
            read_models.runner.catch_up()
            read_models.close()
        finally:
            ledger.close()
    assert billed.adjusted == -NANO // 100 and billed.uncollected > 0
    return billed


def _refund(account: Account, request_id: UUID, amount: int) -> list[Any]:
    account.refund_charge(request_id, amount, reason="goodwill")
    return []


def _undercollected(store: Seeded, ledger: Any, clock: FakeClock, billed: Billed) -> SeededRequest:
    """A request whose hold expired and whose account was then debited: charged less than its cost."""
    store.account_ids["initech"] = Accounts(ledger).create_account("initech").id
    Accounts(ledger).grant_credits("initech", NANO, reason="seed")
    key = ApiKeys(ledger).issue_api_key("initech", name="main").plaintext
    billing = RequestBilling(
        ledger,
        Router(ledger, CredentialHealth(), rng=random.Random(3)),
        mode="credits",
        hold_ttl=timedelta(seconds=1),
        status_of=status_of,
    )
    opened = billing.open_request(
        key, RequestShape(model=GPT, prompt_bytes=4000, max_output_tokens=1000, choices=1, stream=False)
    )
    clock.current += timedelta(seconds=2)
    assert Accounts(ledger).release_expired_holds("initech") == [opened.request_id]
    Accounts(ledger).adjust_credits("initech", -(NANO - 1_000), reason="spent elsewhere")
    route = next(billing.router.routes(opened.targets[0]))
    receipt = billing.complete_request(opened, route, Usage(input_tokens=1_500, output_tokens=400))
    assert receipt.charge == 1_000 < receipt.cost
    billed.uncollected = receipt.uncollected
    return SeededRequest(
        opened.request_id, clock.current, "initech", GPT, "completed", 200, receipt.charge, receipt.cost, 1_500, 400
    )


def tallyhub(store: Seeded, *args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYHUB_")}
    return cli({**env, **store.env}, *args)


def export_ledger(
    store: Seeded, window: Window, file_format: str, out: Path
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """``tallyhub export ledger`` of the window, and its rows as the file has them (chain left out)."""
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    manifest = tallyhub(
        store,
        "export",
        "ledger",
        "--from",
        window.since.strftime(stamp),
        "--to",
        window.until.strftime(stamp),
        "--format",
        file_format,
        "--out",
        str(out),
    )
    text = out.read_text()
    if file_format == "csv":
        rows = [dict(row) for row in csv.DictReader(io.StringIO(text))]
    else:
        rows = [{k: "" if v is None else str(v) for k, v in json.loads(line).items()} for line in text.splitlines()]
    assert manifest["rows"] == len(rows) and all(set(row) == {*manifest["columns"], "chain"} for row in rows)
    return manifest, rows


def open_overview(dashboard: Start, store: Seeded, time_range: str, **kwargs: Any) -> AppTest:
    app = dashboard(store, **kwargs)
    app.selectbox(key="overview_range").select(time_range).run()
    if time_range == "Custom days":
        today = store.now.date()
        app.date_input(key="overview_days").set_value((today - timedelta(days=10), today - timedelta(days=1))).run()
    assert not app.exception, app.exception
    return app


def metric(app: AppTest, label: str) -> tuple[str, str]:
    """The metric's value and its help text."""
    found = next(m for m in app.metric if m.label == label)
    return found.value, found.proto.help


@pytest.mark.parametrize("time_range", RANGES)
def test_overview_spend_and_completed_requests_equal_the_charge_rows_of_a_ledger_export_of_the_window(
    billed: Billed, dashboard: Start, time_range: str, tmp_path: Path
) -> None:
    store = billed.store
    app = open_overview(dashboard, store, time_range)
    window: Window = app.session_state["overview_window"]
    file_format = "jsonl" if time_range == "Last 7 days" else "csv"
    manifest, rows = export_ledger(store, window, file_format, tmp_path / f"ledger.{file_format}")

    charges = [row for row in rows if row["kind"] == "charge"]
    charged = -sum(int(row["amount_nanocredits"]) for row in charges)
    uncollected = sum(int(row["uncollected_nanocredits"]) for row in charges)
    spend, spend_help = metric(app, "Spend (credits)")
    requests, requests_help = metric(app, "Requests")
    assert Decimal(spend) * NANO == charged and spend == credits_text(charged)  # exact, to the nanocredit
    assert f"Priced at list: {credits_text(charged + uncollected)};" in spend_help
    assert f"{credits_text(uncollected)} of it was uncollected" in spend_help
    completed, failed = (int(part.split()[0].replace(",", "")) for part in requests_help.split(" + "))
    assert completed == len(charges) and completed + failed == int(requests.replace(",", ""))
    assert manifest["totals"]["kinds"]["charge"]["count"] == len(charges)
    assert manifest["totals"]["kinds"]["charge"]["amount"] == -charged

    # the same figures from the receipts the billing returned, so neither side is compared with itself
    in_window = store.in_window(window.since, window.until)
    assert charged == sum(r.charge for r in in_window)
    assert len(charges) == sum(r.outcome == "completed" for r in in_window)
    assert failed == sum(r.outcome == "failed" for r in in_window) > 0  # failed requests have no ledger row
    # refunds and adjustments are ledger rows of their own that Spend does not net
    refunds = sum(int(row["amount_nanocredits"]) for row in rows if row["kind"] == "refund")
    adjustments = sum(int(row["amount_nanocredits"]) for row in rows if row["kind"] == "adjustment")
    # the refund, the adjustment and the undercollected request (with its own debit) are seeded
    # after the other requests, up to now: a window may hold all, none, or (run just after a
    # day's boundary) only the first of them
    refund_in, adjustment_in, undercollected_in = (window.since <= at < window.until for at in billed.extras_at)
    assert refunds == (billed.refunded if refund_in else 0)
    assert adjustments == (billed.adjusted if adjustment_in else 0) - ((NANO - 1_000) if undercollected_in else 0)
    assert uncollected == (billed.uncollected if undercollected_in else 0)
    if refund_in:
        assert billed.refunded > 0 and spend != credits_text(charged - refunds)
    if undercollected_in:
        assert billed.uncollected > 0
    assert any("minus the sum of the `charge` rows of `tallyhub export ledger`" in c.value for c in app.caption)


def ledger_views(store: Seeded) -> Views:
    database = store.settings.database
    sql: SqlStore = (
        PostgresStore(database.conninfo(), database.schema)
        if database.kind == "postgres"
        else SqliteStore(database.read_models_sqlite_path)
    )
    return Views(sql, SqlBalancesView(sql), SqlUsageView(sql), SqlRequestLogView(sql), SqlLedgerEntriesView(sql))


def test_the_exports_page_lists_recorded_exports_and_its_ledger_snapshot_has_their_rows(
    billed: Billed, on_page: Callable[[Seeded, str], AppTest], tmp_path: Path
) -> None:
    store = billed.store
    folder = store.settings.data_dir / "exports"
    folder.mkdir(exist_ok=True)
    app = on_page(store, "exports")
    app.radio(key="exports_kind").set_value("ledger").run()
    window: Window = app.session_state["exports_window"]
    recorded, _ = export_ledger(store, window, "csv", folder / "ledger-window.csv")
    app.run()
    assert not app.exception, app.exception

    listed = next(t.value for t in app.dataframe if "chain head" in t.value.columns)
    assert "ledger-window.csv" in set(listed["file"])
    assert listed.set_index("file").loc["ledger-window.csv", "recorded"] == "yes"
    app.selectbox(key="exports_recorded").select(list(listed["file"]).index("ledger-window.csv")).run()
    assert app.session_state["exports_recorded_path"] == str(folder / "ledger-window.csv")
    assert any("matches its manifest" in s.value for s in app.success)
    labels = [b.label for b in app.get("download_button")]
    assert labels[:2] == ["Download ledger-window.csv", "Download its manifest"]

    # the snapshot of the same window: the recorded export's rows, columns and totals; not recorded
    snapshot = app.session_state["exports_manifest"]
    assert (
        snapshot["columns"]
        == recorded["columns"]
        == [*(f"{n}_nanocredits" if n in ("amount", "balance", "uncollected", "held") else n for n in LEDGER_FIELDS)]
    )
    assert (snapshot["rows"], snapshot["totals"], snapshot["accounts"]) == (
        recorded["rows"],
        recorded["totals"],
        recorded["accounts"],
    )
    assert snapshot["events"]["first_position"] == recorded["events"]["first_position"]
    assert snapshot["events"]["last_position"] == recorded["events"]["last_position"]
    assert snapshot["recorded"] is False and snapshot["chain"]["seed"] == "0" * 64 and recorded["export_id"]
    views = ledger_views(store)
    try:
        built = export_files.snapshot("ledger", views, window, "csv", {})
    finally:
        views.store.close()
    assert built is not None
    fmt = FORMATS["csv"]()
    with open(folder / "ledger-window.csv", "rb") as file:
        recorded_rows = [row.content for row in fmt.read(file, recorded["columns"])]
    assert [row.content for row in fmt.read(io.BytesIO(built.data), recorded["columns"])] == recorded_rows

    # tallyhub verify refuses the snapshot as an export: it is in no export log
    path = tmp_path / built.file_name
    path.write_bytes(built.data)
    manifest_path(path).write_text(json.dumps(built.manifest))
    services = build_services(store.settings)
    try:
        problems = check_export(services, path)
    finally:
        services.read_models.close()
        services.ledger.close()
    assert [p for p in problems if "is not in the ledger's ledger export log" in p] == problems != []

    # a recorded file edited afterwards is flagged on the page
    edited = folder / "ledger-window.csv"
    edited.write_text(edited.read_text().replace(",charge,-", ",charge,-9", 1))
    app.run()
    assert any("not** its manifest's" in e.value for e in app.error)


@pytest.mark.parametrize("backend", BACKENDS)
def test_in_track_mode_spend_is_the_list_price_and_the_ledger_export_has_no_charge_rows(
    backend: str, tmp_path: Path, pg_schemas: PgSchemas, dashboard: Start
) -> None:
    store = empty_store(tmp_path / "data", database_url(backend, pg_schemas))
    clock = FakeClock(store.now - timedelta(hours=2))
    costs = []
    with events_stamped_by(clock.now):
        ledger = build_ledger(store.settings, clock=clock)
        try:
            ledger.load_deployment()
            ProviderRegistry(ledger).register_provider(
                "openai", "openai", base_url="http://127.0.0.1:9/v1", region=None, secret="sk-track-mode-0001"
            )
            Prices(ledger).set_price(GPT, price_from_credits(input="2", output="8"))
            Accounts(ledger).create_account("tracked")
            key = ApiKeys(ledger).issue_api_key("tracked", name="main").plaintext
            billing = RequestBilling(
                ledger,
                Router(ledger, CredentialHealth()),
                mode="track",
                hold_ttl=timedelta(minutes=15),
                status_of=status_of,
            )
            for tokens in (100, 2_000, 30_000):
                clock.current += timedelta(minutes=7)
                opened = billing.open_request(
                    key, RequestShape(model=GPT, prompt_bytes=400, max_output_tokens=None, choices=1, stream=False)
                )
                route = next(billing.router.routes(opened.targets[0]))
                costs.append(billing.complete_request(opened, route, Usage(input_tokens=tokens, output_tokens=50)).cost)
            read_models = build_read_models(store.settings, ledger)
            read_models.runner.catch_up()
            read_models.close()
        finally:
            ledger.close()

    app = open_overview(dashboard, store, "Last 24 hours", extra_env={"TALLYHUB_BILLING_MODE": "track"})
    window: Window = app.session_state["overview_window"]
    manifest, rows = export_ledger(store, window, "csv", tmp_path / "ledger.csv")
    spend, spend_help = metric(app, "Spend (credits)")
    assert spend == credits_text(sum(costs)) and sum(costs) > 0 and spend_help.startswith("Track mode")
    assert [row for row in rows if row["kind"] == "charge"] == []
    assert manifest["totals"]["kinds"]["charge"]["count"] == 0
    assert any("Track mode: Spend is the requests' list price" in c.value for c in app.caption)
