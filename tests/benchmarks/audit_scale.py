"""How replay, export and verify scale with history: writes N charged requests (hold,
settle and request record for each, through the domain aggregates, saved in batches),
stamped evenly over the last ``--days`` days, into a fresh SQLite or PostgreSQL store, then times

- a replay preview of every charge under a price book with every rate doubled, and of one
  day's window of them (with the rows it read: a window reads its own rows only),
- catching the ledger-entries read model up, and a ledger export of its N rows (CSV),
- verify (events folded, read models compared, every record re-priced), and a verify of the
  same day's window (its records through the index, their charges by position; with the rows
  it read).

    .venv/bin/python -m tests.benchmarks.audit_scale --charges 1000000 --store sqlite

Random usage per request (input 1..4000, output 1..1000 tokens), one account per 1,000
requests. Only local files and 127.0.0.1 are used; the run stops by itself.
"""

import argparse
import random
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

from adapters.exports.exporter import create_export
from adapters.settings import DatabaseConfig
from application.accounts import Accounts
from application.event_scan import time_of
from application.history_reads import decode, rows
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from application.replay import COMPLETED, Replayer, ReplayPlan
from application.verify import LedgerVerifier
from application.verify_window import VerifyWindow, WindowVerifier
from domain.pricing import price_usage
from domain.request_record import RequestDetails, RequestRecord
from domain.usage import Usage
from projections.read_models import build_read_models
from tests.benchmarks.ledger_throughput import bench_database
from tests.benchmarks.ledger_throughput import build as new_ledger
from tests.support.event_times import events_stamped_by

MODEL = "mock/mock-gpt"
PRICE = price_from_credits(input="0.15", output="0.6", cached_input="0.075")
DOUBLED = price_from_credits(input="0.30", output="1.2", cached_input="0.15")
PER_ACCOUNT = 1_000
BATCH = 1_000


def build(database: DatabaseConfig) -> Ledger:
    return prepare(new_ledger(database))


def prepare(ledger: Ledger) -> Ledger:
    """An initialised ledger with the mock provider and MODEL priced at PRICE."""
    ProviderRegistry(ledger).register_provider(
        "mock", "openai", base_url=None, region=None, secret="sk-bench-secret-0001"
    )
    Prices(ledger).set_price(MODEL, PRICE)
    return ledger


def write_history(ledger: Ledger, charges: int, rng: random.Random, days: int = 1) -> None:
    end = datetime.now(UTC)
    written = [0]
    start, step = end - timedelta(days=days), timedelta(days=days) / max(charges, 1)
    with events_stamped_by(lambda: start + step * written[0]):  # spread over the days, by charges written
        _write_history(ledger, charges, rng, written)


def _write_history(ledger: Ledger, charges: int, rng: random.Random, written: list[int]) -> None:
    expires = datetime.now(UTC) + timedelta(hours=1)
    version = ledger.price_book().latest.number
    done = 0
    while done < charges:
        account = Accounts(ledger).create_account(f"bench-{done // PER_ACCOUNT}")
        account.grant_credits(10**15, "bench")
        for start in range(0, min(PER_ACCOUNT, charges - done), BATCH):
            records = []
            for _ in range(min(BATCH, PER_ACCOUNT - start, charges - done)):
                request_id = uuid4()
                inputs = rng.randint(1, 4000)
                usage = Usage(
                    input_tokens=inputs,
                    cached_input_tokens=rng.randint(0, inputs // 2),
                    output_tokens=rng.randint(1, 1000),
                )
                cost = price_usage(PRICE, usage)
                account.place_hold(request_id, cost + 1000, expires)
                account.settle_hold(request_id, cost)
                records.append(charged_record(request_id, account.id.hex, usage, cost, version, expires))
                done += 1
                written[0] = done
            ledger.save(account, *records)


def charged_record(
    request_id: UUID,
    account_hex: str,
    usage: Usage,
    cost: int,
    version: int,
    at: datetime,
    *,
    charge: int | None = None,
    hold: int | None = None,
) -> RequestRecord:
    """The record of a completed request of MODEL costing ``cost``, as the gateway writes one:
    charged ``cost`` from a hold of ``cost + 1000`` unless ``charge`` or ``hold`` say otherwise
    (``hold`` 0: track mode)."""
    return RequestRecord.completed(
        request_id,
        RequestDetails(
            outcome="completed",
            account_id=account_hex,
            api_key_id=uuid4().hex,
            requested_model=MODEL,
            model=MODEL,
            provider="mock",
            upstream_model="mock-gpt",
            credential_id="bench",
            endpoint="chat.completions",
            stream=False,
            status=200,
            error_code=None,
            usage=usage,
            charge=cost if charge is None else charge,
            cost=cost,
            uncollected=0,
            hold=cost + 1000 if hold is None else hold,
            price_book_version=version,
            priced=True,
            latency_ms=1.0,
            ttfb_ms=None,
            started_at=at.isoformat(),
            provider_cost=None,
        ),
    )


def timed(label: str, work, *args, **kwargs):  # type: ignore[no-untyped-def]
    """Runs ``work``; prints its wall time, and this process's CPU time below it (on a shared
    machine the CPU time is the steadier figure)."""
    started, cpu = time.perf_counter(), time.process_time()
    result = work(*args, **kwargs)
    elapsed = time.perf_counter() - started
    print(f"{label:<44} {elapsed:8.1f} s", flush=True)
    print(f"{'':<44} {time.process_time() - cpu:8.1f} s of this process's CPU", flush=True)
    return result, elapsed


class RowCount:
    """Counts the event rows the ledger's recorder hands to replay (application/history_reads.py)."""

    def __init__(self, recorder: Any) -> None:
        self.rows = 0
        for name in ("select_rows", "select_rows_at"):
            method = getattr(recorder, name, None)
            if method is not None:
                setattr(recorder, name, self._counting(method))

    def _counting(self, method: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            found = method(*args, **kwargs)
            self.rows += len(found)
            return found

        return counted


def last_whole_day(ledger: Ledger) -> datetime:
    """The start of the history's last whole day (UTC)."""
    return max(record_times(ledger)).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)


def one_day(ledger: Ledger, charges: int, seconds_whole: float) -> None:
    """A replay preview of the history's last whole day, with the rows it read."""
    since = last_whole_day(ledger)
    plan = ReplayPlan({MODEL: DOUBLED}, since=since, until=since + timedelta(days=1))
    counted = RowCount(ledger.recorder)
    started, cpu = time.perf_counter(), time.process_time()
    report = Replayer(ledger).preview(plan)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    for name in ("select_rows", "select_rows_at"):
        vars(ledger.recorder).pop(name, None)
    assert report.new == 2 * report.old, "doubling must double exactly"
    print(
        f"{'':<44} one day ({since:%Y-%m-%d}): {report.charges:,} of {charges:,} charges in {seconds:.2f} s "
        f"({seconds / seconds_whole:.3f} of the whole; CPU {cpu:.2f} s), {counted.rows:,} rows read",
        flush=True,
    )


def one_day_verified(ledger: Ledger, charges: int, seconds_whole: float) -> None:
    """A verify of the history's last whole day, with the rows it read."""
    since = last_whole_day(ledger)
    counted = RowCount(ledger.recorder)
    started, cpu = time.perf_counter(), time.process_time()
    report = WindowVerifier(ledger).verify(VerifyWindow(since, since + timedelta(days=1)))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    for name in ("select_rows", "select_rows_at"):
        vars(ledger.recorder).pop(name, None)
    assert report.ok, report.problems[:5]
    print(
        f"{'':<44} one day ({since:%Y-%m-%d}): {report.checked['request_records']:,} of {charges:,} records "
        f"verified in {seconds:.2f} s ({seconds / seconds_whole:.3f} of the whole; CPU {cpu:.2f} s), "
        f"{counted.rows:,} rows read",
        flush=True,
    )


def record_times(ledger: Ledger) -> Iterator[datetime]:
    """The last 1,000 request records' times (the history is written in time order)."""
    last = ledger.recorder.max_notification_id() or 0
    for *_, state in rows(ledger.recorder, (COMPLETED,), after=max(0, last - 3_000), stop=last):
        yield time_of(decode(state)["timestamp"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--charges", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30, help="the history's charges are spread over these days")
    parser.add_argument("--skip-verify", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, bench_database(args.store, Path(tmp)) as database:
        ledger = build(database)
        print(f"{args.charges:,} charges on {args.store}", flush=True)
        timed(
            "write the history (3 events per charge)",
            write_history,
            ledger,
            args.charges,
            random.Random(7),
            args.days,
        )
        report, seconds = timed(
            "replay preview, every rate doubled", Replayer(ledger).preview, ReplayPlan({MODEL: DOUBLED})
        )
        assert report.charges == args.charges and report.new == 2 * report.old, "doubling must double exactly"
        print(f"{'':<44} {args.charges / seconds:8,.0f} charges/s; difference {report.difference:,} nanocredits")
        if args.days > 1:
            one_day(ledger, args.charges, seconds)
        read_models = build_read_models(database, ledger)
        read_models.create_tables()
        services = SimpleNamespace(ledger=ledger, read_models=read_models)
        runner = read_models.runner
        # The read models are new and empty: rebuilding one is catching it up from zero, alone.
        timed("catch up the ledger-entries read model", runner.rebuild, "ledger_entries")
        timed("catch up the other read models", runner.catch_up)
        manifest, seconds = timed(
            "export ledger (CSV, with hash chain)",
            create_export,
            services,
            "ledger",
            None,
            None,
            "csv",
            Path(tmp) / "ledger.csv",
        )
        print(
            f"{'':<44} {manifest['rows'] / seconds:8,.0f} rows/s; "
            f"{(Path(tmp) / 'ledger.csv').stat().st_size / 1e6:,.0f} MB"
        )
        if not args.skip_verify:
            verified, seconds = timed(
                "verify (fold, compare, re-price every record)", LedgerVerifier(ledger, read_models).verify
            )
            assert verified.ok, verified.problems[:5]
            if args.days > 1:
                one_day_verified(ledger, args.charges, seconds)
        read_models.close()
        ledger.close()


if __name__ == "__main__":
    main()
