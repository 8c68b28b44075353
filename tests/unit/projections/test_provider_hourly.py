"""The provider rollups (projections/provider_hourly.py): per UTC hour, provider, credential
and model — requests, charges, provider cost, estimated usage, failed attempts, failovers.
``ProviderHourlyContract`` runs here in memory and, in
tests/integration/projections/test_provider_hourly_sql.py, on SQLite and PostgreSQL.

A backend provides ``ledger`` (a ``ProviderLedger`` on its event store) and ``read_models``
(caught up by the tests themselves, on an empty read-model database).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, replace
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.billing import Attempt, RequestBilling, RequestShape
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from domain.request_record import RequestRecord
from domain.usage import Usage
from projections.provider_hourly import ProviderCounts, ProviderHourRow, sum_by_day
from projections.read_models import ReadModels, build_read_models
from tests.support.routes import first_route
from tests.unit.projections.projection_contract import T0, FakeLedger, request_details

POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
GPT, MINI = "openai/gpt-4o", "backup/gpt-4o-mini"
A, B, C = "cred-a", "cred-b", "cred-c"
H1 = T0 + timedelta(hours=1)


class ProviderLedger(FakeLedger):
    def served(
        self,
        at: datetime,
        *,
        model: str = GPT,
        credential: str | None = A,
        charge: int = 0,
        provider_cost: int | None = None,
        source: str = "provider",
        failed: bool = False,
        status: int | None = None,
        attempts: tuple[tuple[str, str], ...] = (),
        attempts_at: datetime | None = None,
    ) -> UUID:
        """Record one request served (or failed) by ``model`` through ``credential`` at ``at``,
        after failed ``attempts`` of (model, credential), stamped ``attempts_at`` (default: just after ``at``)."""
        details = request_details(model=model, failed=failed, source=source, charge=charge, status=status)
        details["credential_id"] = credential
        if not failed:
            details["provider_cost"] = provider_cost
        request_id = uuid4()
        event_class = RequestRecord.Failed if failed else RequestRecord.Completed
        record = RequestRecord._create(event_class, id=request_id, details=details, timestamp=at)
        for i, (tried_model, tried_credential) in enumerate(attempts):
            attempt = {
                "model": tried_model,
                "provider": tried_model.split("/")[0],
                "credential_id": tried_credential,
                "status": 503,
                "error_code": "upstream_unavailable",
                "latency_ms": 4.5,
            }
            record.trigger_event(
                RequestRecord.AttemptFailed,
                attempt=attempt,
                timestamp=(attempts_at or at) + timedelta(microseconds=i + 1),
            )
        self.save(record)
        return request_id


def row(hour: datetime, model: str, credential: str | None, **counts: int) -> ProviderHourRow:
    return ProviderHourRow(hour, model.split("/")[0], credential, model, **asdict(ProviderCounts(**counts)))


def rows_of(read_models: ReadModels) -> list[ProviderHourRow]:
    assert read_models.providers is not None
    return read_models.providers.list_hours()


def failover_history(ledger: ProviderLedger) -> None:
    """Failovers to another credential, to a fallback model, one that failed anyway, and
    an attempt stamped in the next hour."""
    ledger.served(T0, model=MINI, credential=C, charge=300, provider_cost=100, attempts=((GPT, A), (GPT, B)))
    ledger.served(T0 + timedelta(minutes=1), credential=B, charge=900, provider_cost=400, attempts=((GPT, A),))
    ledger.served(T0 + timedelta(minutes=2), credential=B, failed=True, attempts=((GPT, A),))
    ledger.served(
        T0 + timedelta(minutes=59),
        model=MINI,
        credential=C,
        charge=50,
        provider_cost=20,
        attempts=((GPT, A),),
        attempts_at=H1,
    )


FAILOVER_ROWS = [
    row(T0, MINI, C, requests=1, completed=1, charged=300, cost=307, provider_cost=100, failovers=1),
    row(T0, GPT, A, failed_attempts=3),
    row(
        T0,
        GPT,
        B,
        requests=2,
        completed=1,
        failed=1,
        charged=900,
        cost=907,
        provider_cost=400,
        failed_attempts=1,
        failovers=1,
    ),
    row(T0, MINI, C, requests=1, completed=1, charged=50, cost=57, provider_cost=20, failovers=1),
    row(H1, GPT, A, failed_attempts=1),
]


def merged(rows: list[ProviderHourRow]) -> list[ProviderHourRow]:
    """Rows with equal keys summed (the expected table above lists requests one by one)."""
    by_key: dict[tuple[Any, ...], ProviderCounts] = {}
    for r in rows:
        by_key.setdefault((r.hour, r.provider, r.credential_id or "", r.model), ProviderCounts()).add(r.counts)
    return [ProviderHourRow(h, p, c or None, m, **asdict(n)) for (h, p, c, m), n in sorted(by_key.items())]


class ProviderHourlyContract:
    def test_each_bucket_sums_its_requests_charges_and_provider_costs_exactly(
        self, ledger: ProviderLedger, read_models: ReadModels
    ) -> None:
        ledger.served(T0 + timedelta(minutes=1), charge=1_000, provider_cost=600)
        ledger.served(T0 + timedelta(minutes=2), charge=500, provider_cost=None, source="estimated")
        ledger.served(T0 + timedelta(minutes=3), failed=True)
        ledger.served(T0 + timedelta(minutes=4), credential=B, charge=700, provider_cost=300, source="estimated")
        ledger.served(T0 + timedelta(minutes=5), credential=None, failed=True, status=402)  # refused before any call
        ledger.served(T0 + timedelta(minutes=61), charge=2_000, provider_cost=1_200)
        read_models.runner.catch_up()

        assert rows_of(read_models) == [
            row(T0, GPT, None, requests=1, failed=1),
            row(
                T0,
                GPT,
                A,
                requests=3,
                completed=2,
                failed=1,
                charged=1_500,
                cost=1_514,
                provider_cost=600,
                provider_cost_unknown=1,
                estimated=1,
                estimated_charged=500,
            ),
            row(
                T0,
                GPT,
                B,
                requests=1,
                completed=1,
                charged=700,
                cost=707,
                provider_cost=300,
                estimated=1,
                estimated_charged=700,
            ),
            row(H1, GPT, A, requests=1, completed=1, charged=2_000, cost=2_007, provider_cost=1_200),
        ]
        assert read_models.providers is not None
        totals = read_models.providers.get_totals()
        assert totals == ProviderCounts(
            requests=6,
            completed=4,
            failed=2,
            charged=4_200,
            cost=4_228,
            provider_cost=2_100,
            provider_cost_unknown=1,
            estimated=2,
            estimated_charged=1_200,
        )
        assert totals.margin == 2_100
        assert read_models.providers.get_totals(since=H1).charged == 2_000
        assert read_models.providers.get_totals(until=H1).charged == 2_200
        assert [r.hour for r in read_models.providers.list_hours(since=H1, until=H1 + timedelta(hours=1))] == [H1]

    @pytest.mark.parametrize("batch_size", [1, 2, 3, 1000])
    def test_failed_attempts_count_at_their_own_route_and_failovers_at_the_serving_one(
        self, ledger: ProviderLedger, read_models: ReadModels, batch_size: int
    ) -> None:
        """Small batches split a record's events, so the projection reads the record back."""
        read_models.runner.batch_size = batch_size
        failover_history(ledger)
        read_models.runner.catch_up()
        assert rows_of(read_models) == merged(FAILOVER_ROWS)
        assert read_models.providers is not None
        totals = read_models.providers.get_totals()
        assert (totals.failed_attempts, totals.failovers, totals.requests) == (5, 3, 4)

    def test_rebuild_from_zero_gives_the_rows_built_live_in_small_batches(
        self, ledger: ProviderLedger, read_models: ReadModels
    ) -> None:
        read_models.runner.batch_size = 2
        failover_history(ledger)
        read_models.runner.catch_up()
        ledger.served(H1 + timedelta(minutes=3), charge=10, provider_cost=4, source="estimated", attempts=((GPT, B),))
        ledger.served(H1 + timedelta(minutes=4), credential=B, charge=11)
        read_models.runner.catch_up()
        live = rows_of(read_models)
        assert sum(r.failovers for r in live) == 4

        read_models.runner.batch_size = 1000
        assert read_models.runner.rebuild("provider_hourly") == 6 + 6  # 6 records, 6 failed attempts
        assert rows_of(read_models) == live
        read_models.runner.batch_size = 1
        read_models.runner.rebuild("provider_hourly")
        assert rows_of(read_models) == live

    def test_a_batch_delivered_again_or_split_inside_a_record_changes_nothing(
        self, ledger: ProviderLedger, read_models: ReadModels
    ) -> None:
        failover_history(ledger)
        batch = ledger.recorder.select_notifications(None, 1000)
        runner = read_models.runner
        assert runner.apply("provider_hourly", batch[:2]) == 2  # the first record's Completed and one attempt
        assert runner.apply("provider_hourly", batch) == len(batch) - 2
        assert runner.apply("provider_hourly", batch) == 0
        assert runner.apply("provider_hourly", batch[1:4]) == 0
        assert runner.catch_up() > 0  # the other projections; this one has nothing left
        assert rows_of(read_models) == merged(FAILOVER_ROWS)

    def test_days_are_sums_of_their_hours(self, ledger: ProviderLedger, read_models: ReadModels) -> None:
        ledger.served(T0, charge=1, provider_cost=1)
        ledger.served(T0 + timedelta(hours=13, minutes=59), charge=2, provider_cost=1)  # 23:59 UTC the same day
        ledger.served(T0 + timedelta(hours=14), charge=4, provider_cost=2)  # the next day
        ledger.served(T0 + timedelta(hours=14), credential=B, charge=8)
        read_models.runner.catch_up()
        days = sum_by_day(rows_of(read_models))
        assert [(d.day, d.credential_id, d.counts.requests, d.counts.charged, d.counts.margin) for d in days] == [
            (date(2030, 1, 2), A, 2, 3, 1),
            (date(2030, 1, 3), A, 1, 4, 2),
            (date(2030, 1, 3), B, 1, 8, 8),
        ]


class TestInMemoryProviderHourly(ProviderHourlyContract):
    @pytest.fixture
    def ledger(self) -> Iterator[ProviderLedger]:
        app = ProviderLedger(env=POPO)
        yield app
        app.close()

    @pytest.fixture
    def read_models(self, ledger: ProviderLedger) -> ReadModels:
        return build_read_models(None, ledger)


def test_billed_requests_carry_the_price_books_provider_cost_and_their_failover(
    ledger: Ledger, credits_billing: RequestBilling
) -> None:
    """The real Ledger and RequestBilling: provider cost at the book's cost rates, a failover."""
    ProviderRegistry(ledger).register_provider(
        "openai", "openai", base_url="http://127.0.0.1:9/v1", region=None, secret="sk-test-secret-0001"
    )
    ProviderRegistry(ledger).add_credential("openai", "sk-test-secret-0002")
    Prices(ledger).set_price(
        "openai/gpt-test",
        replace(price_from_credits(input="2", output="8"), provider_cost=price_from_credits(input="1", output="5")),
    )
    Prices(ledger).set_price("openai/gpt-free", price_from_credits(input="1", output="1"))  # no provider-cost rates
    Accounts(ledger).create_account("acme")
    key = ApiKeys(ledger).issue_api_key("acme").plaintext
    Accounts(ledger).grant_credits("acme", 10**9)
    read_models = build_read_models(None, ledger)

    opened = credits_billing.open_request(key, RequestShape("openai/gpt-test", 200, 100, 1, False))
    routes = credits_billing.router.routes(opened.targets[0])
    failing, serving = next(routes), next(routes)
    usage = Usage(input_tokens=120, output_tokens=30, source="estimated")
    receipt = credits_billing.complete_request(
        opened, serving, usage, attempts=(Attempt(failing, 503, "upstream_unavailable", 12.0),)
    )
    unpriced = credits_billing.open_request(key, RequestShape("openai/gpt-free", 200, 100, 1, False))
    free_route = first_route(credits_billing, unpriced)
    free = credits_billing.complete_request(unpriced, free_route, Usage(input_tokens=10, output_tokens=10))
    read_models.runner.catch_up()

    assert read_models.providers is not None
    by_key = {(r.credential_id, r.model): r for r in read_models.providers.list_hours()}
    served = by_key[(serving.credential_id, "openai/gpt-test")]
    assert (served.requests, served.charged, served.provider_cost, served.failovers) == (
        1,
        receipt.charge,
        120 * 1_000 + 30 * 5_000,
        1,
    )
    assert (served.estimated, served.estimated_charged, served.provider_cost_unknown) == (1, receipt.charge, 0)
    assert by_key[(failing.credential_id, "openai/gpt-test")].failed_attempts == 1
    no_cost = by_key[(free_route.credential_id, "openai/gpt-free")]
    assert (no_cost.charged, no_cost.provider_cost, no_cost.provider_cost_unknown) == (free.charge, 0, 1)
