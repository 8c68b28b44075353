"""The dashboard's pure parts: windows, exact credits text, the what-if and the export files."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from uuid import UUID

import pandas as pd
import pytest

from adapters.exports.datasets import LEDGER_TEXT, ledger_row
from adapters.exports.formats import FORMATS, link
from dashboard import export_files, whatif
from dashboard.metrics import ProviderTotals, credits_text, margin_series
from dashboard.windows import DAY, HOUR, Window, last, whole_days
from domain.export_log import GENESIS
from domain.pricing import ModelPrice
from projections.ledger_entries import InMemoryLedgerEntriesView, LedgerEntry
from projections.memory import InMemoryStore
from projections.usage import COUNTERS, UsageRow

NOW = datetime(2026, 11, 28, 15, 42, 7, tzinfo=UTC)


def test_presets_end_with_the_current_hour_and_the_previous_period_adjoins() -> None:
    window = last(timedelta(days=7), NOW)
    assert window.until == datetime(2026, 11, 28, 16, tzinfo=UTC)
    assert window.span == 7 * DAY and window.previous.until == window.since and window.previous.span == window.span
    assert window.bucket == DAY and last(timedelta(hours=24), NOW).bucket == HOUR
    assert window.bucket_of(window.since + timedelta(days=2, hours=5)) == window.since + 2 * DAY
    assert len(window.bucket_starts()) == 7


def test_custom_ranges_are_whole_utc_days_in_either_order() -> None:
    window = whole_days(date(2026, 11, 20), date(2026, 11, 18))
    assert (window.since, window.until) == (
        datetime(2026, 11, 18, tzinfo=UTC),
        datetime(2026, 11, 21, tzinfo=UTC),
    )
    with pytest.raises(ValueError):
        Window(NOW, NOW + HOUR)  # not on a whole hour


@pytest.mark.parametrize(
    "amount, text",
    [
        (0, "0.00"),
        (1, "0.000000001"),
        (1_500_000_000, "1.50"),
        (-2_000_000_123, "-2.000000123"),
        (10**18 + 7, "1000000000.000000007"),
    ],
)
def test_credits_text_is_exact(amount: int, text: str) -> None:
    assert credits_text(amount) == text
    assert Decimal(text) * 10**9 == amount


def test_margin_per_bucket_is_the_exact_difference_zero_filled_and_totals_say_the_same() -> None:
    window = Window(datetime(2026, 11, 28, 10, tzinfo=UTC), datetime(2026, 11, 28, 13, tzinfo=UTC))
    providers = pd.DataFrame(
        {
            "hour": [window.since, window.since, window.since + 2 * HOUR],
            "charged": [10**18 + 7, 5, 3_000_000_000],
            "provider_cost": [10**18, 0, 3_500_000_000],
        }
    )
    series = margin_series(providers, window)
    assert list(series["margin"]) == [12, 0, -500_000_000]  # exact integers, the empty hour zero-filled
    assert list(series["margin_credits"]) == [1.2e-8, 0.0, -0.5]
    assert list(margin_series(None, window)["margin"]) == [0, 0, 0]
    totals = ProviderTotals(
        charged=int(providers["charged"].sum()), provider_cost=int(providers["provider_cost"].sum())
    )
    assert totals.margin == int(series["margin"].sum()) == -499_999_988
    assert ProviderTotals().margin_rate is None and ProviderTotals(charged=4, provider_cost=1).margin_rate == 0.75


def usage_frame(*rows: dict) -> pd.DataFrame:
    base = {name: 0 for name in COUNTERS}
    return pd.DataFrame([{"account_id": "a" * 32, "model": "openai/m", **base, **row} for row in rows])


def test_what_if_under_the_same_prices_is_the_recorded_cost_and_double_rates_double_it() -> None:
    price = ModelPrice(input=2 * 10**9, output=8 * 10**9, cached_input=10**9)
    # 1,000 input (100 cached) and 500 output tokens over 3 requests, one failed: 1,800,000 + 100,000 + 4,000,000
    usage = usage_frame(
        {
            "requests": 3,
            "failed_requests": 1,
            "input_tokens": 1000,
            "cached_input_tokens": 100,
            "output_tokens": 500,
            "cost": 5_900_000,
        }
    )
    book = {"openai/m": price.to_dict()}
    same = whatif.summarise(whatif.reprice(usage, whatif.parse_edited(whatif.editable_rows(book), book)), ["model"])
    assert list(same["difference"]) == [0]
    doubled = whatif.parse_edited(whatif.editable_rows(book), book, scale="2")
    assert whatif.summarise(whatif.reprice(usage, doubled), ["model"])["new_cost"].tolist() == [11_800_000]


def test_what_if_charges_a_per_request_fee_per_completed_request_and_never_prices_an_unknown_model_at_zero() -> None:
    price = ModelPrice(input=0, output=0, per_request=7)
    usage = usage_frame({"requests": 5, "failed_requests": 2}, {"model": "other/x", "requests": 1, "cost": 9})
    repriced = whatif.reprice(usage, {"openai/m": price})
    assert whatif.summarise(repriced, ["model"])["new_cost"].tolist() == [21]
    assert whatif.unpriced_models(repriced) == ["other/x"]


def test_edited_prices_are_parsed_exactly_or_refused_by_cell() -> None:
    book = {"openai/m": ModelPrice(input=10**9, output=10**9).to_dict()}
    rows = whatif.editable_rows(book)
    rows.loc[0, "output"] = "0.0000000001"
    with pytest.raises(whatif.PriceEditError, match="openai/m: output"):
        whatif.parse_edited(rows, book)
    rows.loc[0, "output"] = "1.1"
    assert whatif.parse_edited(rows, book, scale="1.5")["openai/m"].output == 1_650_000_000


def in_memory_ledger(entries: list[LedgerEntry]) -> InMemoryLedgerEntriesView:
    """The in-memory ledger-entries view holding ``entries`` (it computes their running balances)."""
    store = InMemoryStore()
    view = InMemoryLedgerEntriesView(store)
    with store.tracked("ledger_entries") as tx:
        assert tx is not None
        view.apply(tx, entries)
        tx.advance(entries[-1].position)
    return view


def test_a_ledger_snapshot_is_encoded_and_chained_like_tallyhub_export_from_a_zero_seed() -> None:
    window = Window(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC))
    acme, globex = UUID(int=1), UUID(int=2)
    ledger = in_memory_ledger(
        [
            LedgerEntry(1, acme, window.since - HOUR, "grant", 5 * 10**9, 0, reason="before the window"),
            LedgerEntry(2, acme, window.since, "charge", -1_234, 0, request_id=UUID(int=9), held=9_000),
            LedgerEntry(3, globex, window.since + HOUR, "grant", 10, 0, reason='a "quoted", comma'),
            LedgerEntry(4, globex, window.since + 25 * HOUR, "charge", -10, 0, request_id=UUID(int=8), uncollected=5),
            LedgerEntry(5, acme, window.until, "refund", 1_234, 0, request_id=UUID(int=9), reason="sorry"),
        ]
    )
    names = [SimpleNamespace(account_id=acme, name="acme"), SimpleNamespace(account_id=globex, name="=globex")]
    views = SimpleNamespace(ledger=ledger, balances=SimpleNamespace(list_balances=lambda: names))
    for fmt in ("csv", "jsonl"):
        snap = export_files.snapshot("ledger", views, window, fmt, {"ledger_entries": 77}, now=window.until)
        assert snap is not None
        manifest = snap.manifest
        assert manifest["sha256"] == hashlib.sha256(snap.data).hexdigest()
        assert (manifest["recorded"], manifest["export_id"], manifest["chain"]["seed"]) == (False, None, GENESIS)
        assert manifest["events"] == {"first_position": 2, "last_position": 4, "as_of_position": 77}
        assert manifest["totals"]["net"] == -1_234 + 10 - 10 and manifest["totals"]["uncollected"] == 5
        assert manifest["accounts"][str(globex)]["opening"] == 0 and manifest["accounts"][str(globex)]["closing"] == 0
        assert manifest["accounts"][str(acme)]["opening"] == 5 * 10**9
        assert manifest["accounts"][str(globex)]["name"] == "=globex" and manifest["layout"] == 2
        encoder, previous = FORMATS[fmt](LEDGER_TEXT), GENESIS
        parsed = list(encoder.read(io.BytesIO(snap.data), manifest["columns"]))
        by_id = {row.account_id.hex: row.name for row in names}
        assert [row.content for row in parsed] == [
            encoder.content(ledger_row(e, by_id)) for e in ledger.iter_entries(2, 5)
        ]
        shown = "'=globex" if fmt == "csv" else "=globex"  # a CSV text cell a spreadsheet could run is escaped
        assert [(row.values["account_id"], row.values["account"]) for row in parsed] == [
            (str(acme), "acme"),
            (str(globex), shown),
            (str(globex), shown),
        ]
        for row in parsed:  # each link follows from the one before, the first from the zero seed
            assert row.chain == link(previous, row.content)
            previous = row.chain
        assert previous == manifest["chain"]["head"] and len(parsed) == manifest["rows"] == 3
        assert snap.rows_per_day == {date(2026, 11, 1): 2, date(2026, 11, 2): 1}
        assert export_files.snapshot("ledger", views, window, fmt, {}, max_rows=2) is None
    assert "--from 2026-11-01T00:00:00Z --to 2026-11-03T00:00:00Z" in manifest["record_with"]


def test_a_usage_snapshot_totals_every_counter_of_its_rows() -> None:
    window = Window(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC))
    rows = [
        UsageRow(UUID(int=1), UUID(int=2), "openai", "openai/m", window.since, *(i + 1 for i in range(len(COUNTERS)))),
        UsageRow(UUID(int=1), None, "openai", "openai/m", window.since + HOUR, *(10**12 for _ in COUNTERS)),
    ]
    views = SimpleNamespace(
        usage=SimpleNamespace(list_usage=lambda account, since, until: rows),
        balances=SimpleNamespace(list_balances=lambda: [SimpleNamespace(account_id=UUID(int=1), name="acme")]),
    )
    snap = export_files.snapshot("usage", views, window, "csv", {"usage": 42}, now=window.until)
    assert snap is not None
    parsed = list(csv.DictReader(io.StringIO(snap.data.decode())))
    assert len(parsed) == snap.manifest["rows"] == 2 and parsed[1]["api_key_id"] == ""
    assert (parsed[0]["account_id"], parsed[0]["account"], parsed[0]["api_key_id"]) == (
        str(UUID(int=1)),
        "acme",
        str(UUID(int=2)),
    )
    charged = sum(int(row["charge_nanocredits"]) for row in parsed)
    assert charged == snap.manifest["totals"]["charge_nanocredits"] == COUNTERS.index("charge") + 1 + 10**12
    assert parsed[0]["hour"] == "2026-11-01T00:00:00+00:00"


def test_a_recorded_export_is_named_by_its_dashed_id_even_when_its_manifest_gives_hex(tmp_path: Path) -> None:
    old = UUID(int=0xABC)
    for name, given in (("old.csv", old.hex), ("new.csv", str(old)), ("odd.csv", "not-an-id"), ("snap.csv", None)):
        (tmp_path / name).write_text("position,chain\n")
        (tmp_path / f"{name}.manifest.json").write_text(json.dumps({"export_id": given, "created_at": name}))
    found, problems = export_files.recorded_exports(tmp_path)
    assert problems == []
    assert {export.path.name: export.export_id for export in found} == {
        "old.csv": str(old),
        "new.csv": str(old),
        "odd.csv": "not-an-id",
        "snap.csv": "",
    }
