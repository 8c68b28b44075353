"""A store written by an earlier commit (tests/fixtures/store_main_<sha>/, made by
tests/fixtures/make_store_main.py with that commit's code) opened by today's code:

- every aggregate loads, and every request record's typed details and attempts are what
  its events stored, key for key (the stored JSON of a record is unchanged: no upcasting);
- the read models rebuilt from zero hold the rows that commit's read models held;
- verify gives the same report, a replay preview the same report, the reconciliation
  the same figures;
- every export kind, CSV and JSONL, is byte-identical, and so is its manifest apart from
  ``export_id`` and ``previous_export`` (random ids of the exports themselves); its
  ``created_at`` is the clock's, fixed here as it was there;
- records written by today's code into that store have the stored shape that commit wrote
  (the same keys in the same order, values of the same types).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from adapters.bootstrap import build_services, initialise
from adapters.cli.reconcile_commands import read_reconciliation
from adapters.cli.replay_commands import run_replay
from adapters.exports.exporter import create_export
from adapters.presenters import plain, request_record_json
from adapters.services import Services
from adapters.settings import Settings
from application.billing import Attempt, RequestShape
from application.event_scan import scan, time_of, topics_of
from application.history_reads import decode, rows
from application.verify import RECORDS, LedgerVerifier
from application.verify_window import VerifyWindow, WindowVerifier
from dashboard.ledger_reads import receipt_json
from domain.request_record import FailedAttempt, RequestDetails, RequestRecord
from domain.usage import Usage
from tests.fakes.clock import FakeClock
from tests.support.routes import first_route

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "store_main_6d40aed"
FACTS = json.loads((FIXTURE / "fixture.json").read_text())
EXPECTED = FIXTURE / "expected"
REPLAY_PREVIEW = {  # as in make_store_main.py
    "models": {
        "openai/gpt-4o": {"input": "3", "cached_input": "1.5", "output": "12"},
        "openai/o3": {"input": "1.5", "output": "6", "reasoning": "6"},
        "anthropic/claude-sonnet": {"input": "2.75", "output": "14"},
        "openai/dall-e": {"input": "0", "output": "0", "per_image": "0.05"},
    }
}
EXPORTS = [(kind, file_format) for kind in ("ledger", "usage", "requests") for file_format in ("csv", "jsonl")]


def expected(name: str) -> Any:
    return json.loads((EXPECTED / name).read_text())


def as_json(data: Any) -> Any:
    """``data`` as the fixture's files hold it (JSON text and back: tuples are lists)."""
    return json.loads(json.dumps(data))


def open_copy(into: Path) -> Services:
    """A copy of the fixture's store in ``into``, opened with today's code at the fixture's clock."""
    data = into / "data"
    shutil.copytree(FIXTURE / "store", data)
    settings = Settings(data_dir=data, master_key=FACTS["master_key"])
    initialise(settings)  # the read models' tables; the events are as they were
    return build_services(settings, clock=FakeClock(datetime.fromisoformat(FACTS["clock_for_outputs"])))


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A copy of the store opened with today's code; what it says, asked in the order the
    fixture's outputs were made (the exports last: each is recorded in the export log)."""
    data = tmp_path_factory.mktemp("store_main")
    services = open_copy(data)
    try:
        read_models = services.read_models
        read_models.runner.catch_up()
        report = LedgerVerifier(services.ledger, read_models).verify(deep=True)
        found: dict[str, Any] = {
            "services": services,
            "verify.json": {"ok": report.ok, "problems": report.problems, "checked": report.checked},
            "replay_preview.json": run_replay(services, json.dumps(REPLAY_PREVIEW)),
            "balances.json": plain(read_models.balances.list_balances()),
            "request_log.json": plain(read_models.requests.list_requests(limit=2**62)),
            "usage.json": plain(read_models.usage.list_usage()),
            "provider_hourly.json": plain(read_models.providers.list_hours()),
            "reconciliation.json": read_reconciliation(services),
        }
        records = [services.ledger.get_request_record(request_id) for request_id in record_ids(services)]
        found["request_records.json"] = [request_record_json(record) for record in records]
        found["dashboard_receipts.json"] = {str(record.id): receipt_json(record) for record in records}
        exports = data / "exports"
        exports.mkdir()
        for kind, file_format in EXPORTS:
            found[f"{kind}.{file_format}.manifest.json"] = create_export(
                services, kind, None, None, file_format, exports / f"{kind}.{file_format}"
            )
            found[f"{kind}.{file_format}"] = (exports / f"{kind}.{file_format}").read_bytes()
        yield found
    finally:
        services.close()


def record_ids(services: Services) -> list[UUID]:
    topics = topics_of(RequestRecord.Completed, RequestRecord.Failed)
    return [event.originator_id for event in scan(services.ledger.recorder, topics)]


def test_every_aggregate_of_the_store_loads(outputs: dict[str, Any]) -> None:
    ledger = outputs["services"].ledger
    ids = {n.originator_id for n in ledger.recorder.select_notifications(start=1, limit=100_000)}
    assert len(ids) > 40
    for originator_id in ids:
        assert ledger.repository.get(originator_id).id == originator_id


def test_request_records_load_with_typed_details_equal_to_what_was_stored(outputs: dict[str, Any]) -> None:
    ledger = outputs["services"].ledger
    topics = topics_of(RequestRecord.Completed, RequestRecord.Failed, RequestRecord.AttemptFailed)
    stored: dict[UUID, dict[str, Any]] = {}
    attempts: dict[UUID, list[dict[str, Any]]] = {}
    for event in scan(ledger.recorder, topics):
        if event.topic == topics_of(RequestRecord.AttemptFailed)[0]:
            attempts.setdefault(event.originator_id, []).append(event.state["attempt"])
        else:
            stored[event.originator_id] = event.state["details"]
    assert len(stored) == 25 and sum(map(len, attempts.values())) == 3
    for request_id, details in stored.items():
        record = ledger.get_request_record(request_id)
        assert isinstance(record.details, RequestDetails)
        assert record.details.to_dict() == details  # every key, every value, none added
        assert list(record.details.to_dict()) == list(details)  # in the order stored
        assert record.details == RequestDetails.from_dict(details)
        assert all(isinstance(a, FailedAttempt) for a in record.attempts)
        assert [a.to_dict() for a in record.attempts] == attempts.get(request_id, [])
    clamped = ledger.get_request_record(UUID(FACTS["clamped_request"])).details
    assert clamped.usage is not None and clamped.usage.source == "clamped"
    assert clamped.reported_usage is not None and clamped.reported_usage.input_tokens == 10**12


@pytest.mark.parametrize(
    "name",
    ["balances.json", "request_log.json", "usage.json", "provider_hourly.json"],
)
def test_rebuilt_read_models_hold_the_rows_of_main(outputs: dict[str, Any], name: str) -> None:
    found = as_json(outputs[name])
    if name == "request_log.json":  # the request log's columns added since (issue 16), checked on their own
        found = [{k: v for k, v in row.items() if k not in REQUEST_LOG_ADDED} for row in found]
    assert found == expected(name)


REQUEST_LOG_ADDED = ("images", "end_user", "tags", "metadata")


def test_the_request_log_columns_added_since_read_the_records(outputs: dict[str, Any]) -> None:
    """Nothing was attributed then; ``images`` is each record's usage count."""
    ledger = outputs["services"].ledger
    rows = as_json(outputs["request_log.json"])
    assert rows and all((row["end_user"], row["tags"], row["metadata"]) == (None, [], []) for row in rows)
    usages = [ledger.get_request_record(row["request_id"]).details.usage for row in rows]
    assert [row["images"] for row in rows] == [usage.images if usage else 0 for usage in usages]
    assert any(row["images"] for row in rows)


@pytest.mark.parametrize("name", ["verify.json", "replay_preview.json", "reconciliation.json", "request_records.json"])
def test_reports_are_those_of_main(outputs: dict[str, Any], name: str) -> None:
    assert as_json(outputs[name]) == expected(name)


def test_verify_passes(outputs: dict[str, Any]) -> None:
    assert outputs["verify.json"]["ok"] and outputs["verify.json"]["checked"]["request_records"] == 21


def test_every_hour_of_the_store_verifies_as_a_window(outputs: dict[str, Any]) -> None:
    """Windows of records written before windowed verify existed: each hour holding records
    verifies by itself (every charge found beside its record), and the hours hold all 21."""
    ledger = outputs["services"].ledger
    times = [time_of(decode(state)["timestamp"]) for *_, state in rows(ledger.recorder, RECORDS)]
    hours = sorted({at.replace(minute=0, second=0, microsecond=0) for at in times})
    reports = [WindowVerifier(ledger).verify(VerifyWindow(hour, hour + timedelta(hours=1))) for hour in hours]
    assert [report.problems for report in reports] == [[] for _ in hours]
    assert sum(report.checked["request_records"] for report in reports) == 21
    assert sum(report.checked["charges"] for report in reports) == outputs["verify.json"]["checked"]["charges"]


def test_the_dashboard_receipt_keeps_its_shape(outputs: dict[str, Any]) -> None:
    assert as_json(outputs["dashboard_receipts.json"]) == expected("dashboard_receipts.json")


@pytest.mark.parametrize("kind,file_format", EXPORTS)
def test_exports_are_byte_identical(outputs: dict[str, Any], kind: str, file_format: str) -> None:
    name = f"{kind}.{file_format}"
    assert outputs[name] == (EXPECTED / name).read_bytes()
    manifest, was = as_json(outputs[f"{name}.manifest.json"]), expected(f"{name}.manifest.json")
    for own in ("export_id", "previous_export"):  # the exports' own random ids
        manifest.pop(own), was.pop(own)
    assert manifest == was


def stored_records(services: Services) -> tuple[dict[UUID, dict[str, Any]], dict[UUID, list[dict[str, Any]]]]:
    """Every request record's stored details, and its failed attempts, by request id."""
    topics = topics_of(RequestRecord.Completed, RequestRecord.Failed, RequestRecord.AttemptFailed)
    details: dict[UUID, dict[str, Any]] = {}
    attempts: dict[UUID, list[dict[str, Any]]] = {}
    for event in scan(services.ledger.recorder, topics):
        if "attempt" in event.state:
            attempts.setdefault(event.originator_id, []).append(event.state["attempt"])
        else:
            details[event.originator_id] = event.state["details"]
    return details, attempts


def shape_of(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Keys in order, each with its value's type (``NoneType`` for None)."""
    return [(key, type(value).__name__) for key, value in data.items()]


def test_records_written_today_have_the_stored_shape_main_wrote(tmp_path: Path) -> None:
    services = open_copy(tmp_path)
    try:
        billing = services.billing
        before, old_attempts = stored_records(services)
        plain_request = billing.open_request(FACTS["acme_key"], RequestShape("openai/gpt-4o", 400, 512, 1, False))
        route = first_route(billing, plain_request)
        billing.complete_request(plain_request, route, Usage(input_tokens=120, output_tokens=30))
        clamped = billing.open_request(FACTS["acme_key"], RequestShape("openai/gpt-4o", 400, 100, 1, False))
        billing.complete_request(clamped, route, Usage(input_tokens=10**12, output_tokens=5000))
        failed = billing.open_request(FACTS["acme_key"], RequestShape("openai/gpt-4o", 300, 256, 1, True))
        billing.fail_request(
            failed,
            status=502,
            error_code="upstream_error",
            route=route,
            attempts=(Attempt(route, 500, "upstream_error", 95.5),),
        )
        after, new_attempts = stored_records(services)
    finally:
        services.close()
    old = {
        "completed": before[UUID(int=0x7A11_0000_0000_4000_8000_0000_0000_0001)],
        "clamped": before[UUID(FACTS["clamped_request"])],
        "failed": next(d for i, d in before.items() if d["outcome"] == "failed" and i in old_attempts),
    }
    new = {
        "completed": after[plain_request.request_id],
        "clamped": after[clamped.request_id],
        "failed": after[failed.request_id],
    }
    assert "reported_usage" in old["clamped"] and "provider_cost" not in old["failed"]
    for kind in old:
        assert shape_of(new[kind]) == shape_of(old[kind]), kind
        assert shape_of(new[kind]["usage"] or {}) == shape_of(old[kind]["usage"] or {}), kind
    assert shape_of(new["clamped"]["reported_usage"]) == shape_of(old["clamped"]["reported_usage"])
    (old_attempt,) = next(a for i, a in old_attempts.items() if before[i]["outcome"] == "failed")
    assert [shape_of(a) for a in new_attempts[failed.request_id]] == [shape_of(old_attempt)]
