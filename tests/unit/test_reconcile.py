"""``tallyhub reconcile`` / ``GET /admin/v1/reconciliation`` on in-memory read models: the
margin report per credential and day, the estimated charges, and the window rules."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from adapters.cli.main import build_parser
from adapters.cli.reconcile_commands import margin_pct, read_reconciliation, reconciliation_text
from adapters.services import Services
from adapters.settings import Settings
from domain.errors import InvalidRequest
from projections.read_models import build_read_models
from tests.unit.projections.projection_contract import NANO, T0
from tests.unit.projections.test_provider_hourly import GPT, MINI, A, B, C, ProviderLedger

POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
DAY2 = T0 + timedelta(hours=14)  # 2030-01-03 00:00 UTC


@pytest.fixture
def ledger() -> Iterator[ProviderLedger]:
    app = ProviderLedger(env=POPO)
    yield app
    app.close()


@pytest.fixture
def services(ledger: ProviderLedger) -> Services:
    """Only the read models are used by the report."""
    return Services(
        settings=Settings(),
        ledger=None,
        billing=None,
        router=None,
        read_models=build_read_models(None, ledger),
    )


def history(ledger: ProviderLedger) -> dict[str, Any]:
    acme = ledger.open_account("acme")
    ledger.served(T0, model=GPT, credential=A, charge=3 * NANO, provider_cost=2 * NANO)
    ledger.served(
        T0 + timedelta(minutes=5), model=GPT, credential=A, charge=NANO, provider_cost=NANO // 2, source="estimated"
    )
    ledger.served(
        T0 + timedelta(hours=2), model=MINI, credential=C, charge=600, provider_cost=450, attempts=((GPT, A), (GPT, B))
    )
    late = ledger.record(DAY2 + timedelta(minutes=30), account_id=acme, charge=777, source="estimated")
    ledger.served(DAY2 + timedelta(hours=1), model=GPT, credential=B, failed=True)
    return {"acme": acme, "late": late}


def test_the_margin_report_has_one_row_per_day_provider_credential_and_model(
    ledger: ProviderLedger, services: Services
) -> None:
    history(ledger)
    report = read_reconciliation(services)
    shown = [
        (
            r["day"],
            r["provider"],
            r["credential_id"],
            r["model"],
            r["requests"],
            r["charged"],
            r["provider_cost"],
            r["margin"],
            r["margin_pct"],
        )
        for r in report["rows"]
    ]
    assert shown == [
        ("2030-01-02", "backup", C, MINI, 1, 600, 450, 150, "25.00"),
        ("2030-01-02", "openai", A, GPT, 2, 4 * NANO, 2 * NANO + NANO // 2, NANO + NANO // 2, "37.50"),
        ("2030-01-02", "openai", B, GPT, 0, 0, 0, 0, None),  # only a failed attempt
        ("2030-01-03", "openai", "cred-1", "openai/gpt-4o-mini", 1, 777, 0, 777, "100.00"),
        ("2030-01-03", "openai", B, GPT, 1, 0, 0, 0, None),
    ]
    day1_a = report["rows"][1]
    assert (day1_a["charged_credits"], day1_a["provider_cost_credits"], day1_a["margin_credits"]) == (
        "4.000000000",
        "2.500000000",
        "1.500000000",
    )
    assert [(r["failed_attempts"], r["failovers"]) for r in report["rows"][:3]] == [(0, 1), (1, 0), (1, 0)]
    assert report["rows"][3]["provider_cost_unknown"] == 1  # recorded without provider-cost rates

    totals = report["totals"]
    assert totals["charged"] == sum(r["charged"] for r in report["rows"]) == 4 * NANO + 600 + 777
    assert totals["provider_cost"] == 2 * NANO + NANO // 2 + 450
    assert totals["margin"] == totals["charged"] - totals["provider_cost"]
    assert (totals["requests"], totals["failed"], totals["failed_attempts"], totals["failovers"]) == (5, 1, 2, 1)
    assert totals["margin_credits"] == "1.500000927"
    assert (report["from"], report["to"]) == (None, None)


def test_charges_on_estimated_usage_are_listed_oldest_first_and_agree_with_the_rollups(
    ledger: ProviderLedger, services: Services
) -> None:
    ids = history(ledger)
    estimated = read_reconciliation(services)["estimated"]
    assert (estimated["count"], estimated["charged"], estimated["charged_credits"]) == (2, NANO + 777, "1.000000777")
    first, late = estimated["charges"]
    assert (first["model"], first["charge"], first["account"], first["at"]) == (
        GPT,
        NANO,
        None,
        (T0 + timedelta(minutes=5)).isoformat(),
    )
    assert (UUID(late["request_id"]), late["account_id"], late["account"], late["charge_credits"]) == (
        ids["late"]["request_id"],
        str(ids["acme"]),
        "acme",
        "0.000000777",
    )
    totals = read_reconciliation(services)["totals"]
    assert (totals["estimated"], totals["estimated_charged"]) == (estimated["count"], estimated["charged"])


def test_a_window_selects_whole_hours_of_both_read_models(ledger: ProviderLedger, services: Services) -> None:
    history(ledger)
    day2 = read_reconciliation(services, DAY2, DAY2 + timedelta(days=1))
    assert {r["day"] for r in day2["rows"]} == {"2030-01-03"}
    assert day2["estimated"]["count"] == 1 and day2["totals"]["charged"] == 777
    assert (day2["from"], day2["to"]) == ("2030-01-03T00:00:00+00:00", "2030-01-04T00:00:00+00:00")
    naive = read_reconciliation(services, datetime(2030, 1, 2, 10), datetime(2030, 1, 2, 11))
    assert naive["totals"]["charged"] == 4 * NANO and naive["from"] == T0.isoformat()
    empty = read_reconciliation(services, DAY2, DAY2)
    assert (empty["rows"], empty["totals"]["charged"], empty["estimated"]["count"]) == ([], 0, 0)


@pytest.mark.parametrize(
    "since, until, param, message",
    [
        (DAY2, T0, "from", "must not be after its end"),
        (T0 + timedelta(minutes=30), None, "from", "whole UTC hour"),
        (None, DAY2 + timedelta(seconds=1), "to", "whole UTC hour"),
    ],
)
def test_a_bad_window_is_refused_clearly(
    services: Services, since: datetime | None, until: datetime | None, param: str, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message) as refused:
        read_reconciliation(services, since, until)
    assert refused.value.param == param


def test_margin_percent_is_exact_decimal_text_rounded_half_even() -> None:
    assert [margin_pct(m, c) for m, c in ((1, 3), (2, 3), (1, 8), (3, 8), (-1, 3), (5, 5), (0, 7), (4, 0))] == [
        "33.33",
        "66.67",
        "12.50",
        "37.50",
        "-33.33",
        "100.00",
        "0.00",
        None,
    ]
    assert [margin_pct(m, 20_000) for m in (1, 3, 5, -1)] == ["0.00", "0.02", "0.02", "0.00"]  # .5 to even


def test_the_human_report_shows_each_row_the_total_and_the_estimated_charges(
    ledger: ProviderLedger, services: Services
) -> None:
    history(ledger)
    lines = reconciliation_text(read_reconciliation(services)).splitlines()
    assert lines[0] == "reconciliation, the beginning to now"
    assert lines[1].split()[:5] == ["day", "provider", "credential", "model", "requests"]
    assert lines[3].split() == [
        "2030-01-02",
        "openai",
        A,
        GPT,
        "2",
        "4.000000000",
        "2.500000000",
        "+1.500000000",
        "37.50",
    ]
    assert lines[7].split() == ["total", "5", "4.000001377", "2.500000450*", "+1.500000927", "37.50"]
    assert lines[8].startswith("* 1 completed request(s) had no provider-cost rates")
    assert lines[9] == "failed attempts: 2, failovers: 1"
    assert lines[10] == "charges on estimated usage: 2, 1.000000777 credits"
    assert "acme" in lines[12]
    assert lines[13].startswith("charges on clamped usage") and lines[13].endswith(": 0, 0.000000000 credits")
    assert len(lines) == 14


def test_the_command_takes_a_window_and_json() -> None:
    args = build_parser().parse_args(["reconcile", "--from", "2030-01-02", "--to", "2030-01-03T00:00:00Z", "--json"])
    assert (args.since, args.until, args.json) == (
        datetime(2030, 1, 2, tzinfo=UTC),
        datetime(2030, 1, 3, tzinfo=UTC),
        True,
    )
