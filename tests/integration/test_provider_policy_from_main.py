"""Providers and failed attempts written before per-provider timeouts and retries existed
(the store tests/fixtures/store_main_6d40aed/ holds both) read as today's defaults: every
provider has ``UpstreamPolicy()`` (no retries, connect 10 s, no first-byte bound, the
gateway's total), and every recorded failed attempt is a first attempt whose stored form
has no ``retry`` key."""

from pathlib import Path

from domain.provider import UpstreamPolicy
from domain.request_record import RequestRecord
from tests.integration.test_store_from_main import open_copy


def test_providers_and_attempts_written_before_retries_read_as_the_defaults(tmp_path: Path) -> None:
    services = open_copy(tmp_path)
    try:
        ledger = services.ledger
        providers = ledger.list_providers()
        assert providers and all(provider.policy == UpstreamPolicy() for provider in providers)
        ids = {
            notification.originator_id
            for notification in ledger.recorder.select_notifications(start=1, limit=100_000)
            if notification.topic.endswith("RequestRecord.AttemptFailed")
        }
        records = [ledger.repository.get(request_id) for request_id in ids]
        assert all(isinstance(record, RequestRecord) for record in records)
        attempts = [attempt for record in records for attempt in record.attempts]
        assert attempts and all(attempt.retry == 0 and "retry" not in attempt.to_dict() for attempt in attempts)
    finally:
        services.ledger.close()
