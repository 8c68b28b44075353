"""RequestBilling tells its observer of each request once its record is saved (completed,
failed, refused for credit), once however often the call is completed or failed, through
the group-commit writer too, and an observer that raises never reaches billing."""

import asyncio
from datetime import timedelta
from uuid import UUID

import pytest

from adapters.http.errors import status_of
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.billing import Attempt, RequestBilling, RequestShape
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from application.routing import Router
from domain.errors import InsufficientCredits
from domain.request_record import RequestDetails, RequestRecord
from domain.usage import Usage
from tests.support.routes import first_route

MODEL = "openai/gpt-test"


class RecordingObserver:
    def __init__(self) -> None:
        self.seen: list[tuple[UUID, RequestDetails, int]] = []

    def recorded(self, request_id: UUID, details: RequestDetails, failed_attempts: int) -> None:
        self.seen.append((request_id, details, failed_attempts))


class BrokenObserver:
    def recorded(self, request_id: UUID, details: RequestDetails, failed_attempts: int) -> None:
        raise RuntimeError("observer bug")


def shape(max_tokens: int = 100) -> RequestShape:
    return RequestShape(model=MODEL, prompt_bytes=200, max_output_tokens=max_tokens, choices=1, stream=False)


@pytest.fixture
def key(ledger: Ledger) -> str:
    ProviderRegistry(ledger).register_provider(
        "openai", "openai", base_url="http://127.0.0.1:9/v1", region=None, secret="sk-test-secret-0001"
    )
    Prices(ledger).set_price(MODEL, price_from_credits(input="2", output="8"))
    Accounts(ledger).create_account("acme")
    return ApiKeys(ledger).issue_api_key("acme").plaintext


def billing(ledger: Ledger, router: Router, observer: object, mode: str = "credits") -> RequestBilling:
    return RequestBilling(
        ledger,
        router,
        mode=mode,  # type: ignore[arg-type]
        hold_ttl=timedelta(minutes=15),
        status_of=status_of,
        observer=observer,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("mode", ["credits", "track"])
def test_each_completed_or_failed_request_is_observed_once_with_its_saved_record(
    ledger: Ledger, router: Router, key: str, mode: str
) -> None:
    Accounts(ledger).grant_credits("acme", 10**9)
    observer = RecordingObserver()
    b = billing(ledger, router, observer, mode)
    done = b.open_request(key, shape())
    route = first_route(b, done)
    failover = Attempt(route=route, status=503, error_code="upstream_error", latency_ms=1.0)
    receipt = b.complete_request(done, route, Usage(input_tokens=120, output_tokens=30), attempts=(failover,))
    b.complete_request(done, route, Usage(input_tokens=999, output_tokens=999))  # a second time: not recorded
    failed = b.open_request(key, shape())
    b.fail_request(failed, status=502, error_code="upstream_error")
    b.fail_request(failed, status=502, error_code="upstream_error")
    assert [(rid, d.outcome, n) for rid, d, n in observer.seen] == [
        (done.request_id, "completed", 1),
        (failed.request_id, "failed", 0),
    ]
    for request_id, details, _ in observer.seen:
        record = ledger.find(request_id)
        assert isinstance(record, RequestRecord) and record.details == details  # what was saved, as saved
    assert observer.seen[0][1].charge == receipt.charge


def test_a_refusal_for_credit_is_observed_as_a_402(ledger: Ledger, router: Router, key: str) -> None:
    observer = RecordingObserver()
    b = billing(ledger, router, observer)
    with pytest.raises(InsufficientCredits):
        b.open_request(key, shape())
    [(_, details, _)] = observer.seen
    assert (details.status, details.error_code, details.charge) == (402, "insufficient_credits", 0)


def test_the_writer_path_observes_after_the_durable_save(ledger: Ledger, router: Router, key: str) -> None:
    Accounts(ledger).grant_credits("acme", 10**9)
    observer = RecordingObserver()
    b = billing(ledger, router, observer)

    async def run() -> None:
        ledger.start_group_commit()
        try:
            done = await b.open_request_async(key, shape())
            await b.confirm_hold(done)
            route = first_route(b, done)
            await b.complete_request_async(done, route, Usage(input_tokens=10, output_tokens=5))
            await b.complete_request_async(done, route, Usage(input_tokens=10, output_tokens=5))
            failed = await b.open_request_async(key, shape())
            await b.confirm_hold(failed)
            await b.fail_request_async(failed, status=504, error_code="upstream_timeout")
            await b.fail_request_async(failed, status=504, error_code="upstream_timeout")
        finally:
            ledger.stop_group_commit()

    asyncio.run(run())
    assert [(d.outcome, d.status) for _, d, _ in observer.seen] == [("completed", 200), ("failed", 504)]
    for request_id, details, _ in observer.seen:
        assert ledger.find(request_id).details == details


def test_an_observer_that_raises_never_reaches_billing(ledger: Ledger, router: Router, key: str) -> None:
    Accounts(ledger).grant_credits("acme", 10**9)
    b = billing(ledger, router, BrokenObserver())
    opened = b.open_request(key, shape())
    receipt = b.complete_request(opened, first_route(b, opened), Usage(input_tokens=10, output_tokens=5))
    assert receipt.charge > 0 and ledger.find(opened.request_id) is not None
    assert b.observer_errors == 1
