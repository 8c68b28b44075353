"""What the read models say, read independently of the dashboard's own queries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from projections.balances import SqlBalancesView
from projections.provider_hourly import ProviderCounts, ProviderHourRow, SqlProviderHourlyView
from projections.request_log import RequestRow, SqlRequestLogView
from projections.store import PostgresStore, SqliteStore, SqlStore
from projections.usage import SqlUsageView, UsageCounts, UsageRow
from tests.dashboard.seed import Seeded


@dataclass
class ReadModelsOf:
    store: SqlStore
    usage: SqlUsageView
    requests: SqlRequestLogView
    balances: SqlBalancesView
    providers: SqlProviderHourlyView

    @classmethod
    def of(cls, seeded: Seeded) -> ReadModelsOf:
        database = seeded.settings.database
        store: SqlStore = (
            PostgresStore(database.conninfo(), database.schema)
            if database.kind == "postgres"
            else SqliteStore(database.read_models_sqlite_path)
        )
        return cls(
            store, SqlUsageView(store), SqlRequestLogView(store), SqlBalancesView(store), SqlProviderHourlyView(store)
        )

    def close(self) -> None:
        self.store.close()

    def totals(self, since: datetime, until: datetime) -> UsageCounts:
        return self.usage.get_usage_totals(since=since, until=until)

    def usage_rows(self, since: datetime, until: datetime) -> list[UsageRow]:
        return self.usage.list_usage(since=since, until=until)

    def request_rows(self, since: datetime, until: datetime) -> list[RequestRow]:
        return self.requests.list_requests(limit=10**6, since=since, until=until)

    def provider_totals(self, since: datetime, until: datetime) -> ProviderCounts:
        return self.providers.get_totals(since, until)

    def provider_rows(self, since: datetime, until: datetime) -> list[ProviderHourRow]:
        return self.providers.list_hours(since, until)


def percentile(values: list[float], q: float) -> float | None:
    return None if not values else float(pd.Series(values).quantile(q))
