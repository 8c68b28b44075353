"""The status a request record keeps for an error is the status the API answers that error
with, chosen once: adapters/http/errors.py ``status_of`` (``response_for`` answers with it).
The billed call records a failed or refused request before the error reaches HTTP, with the
mapping the composition root gave it (application/ports.py ``StatusOf``), never a copy of
its own: given another mapping, it records that mapping's statuses."""

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest

from adapters.bootstrap import build_services, in_memory_ledger
from adapters.http.errors import response_for, status_of
from adapters.settings import Settings
from application.accounts import Accounts
from application.calls import BilledCalls
from domain.errors import (
    InsufficientCredits,
    InvalidRequest,
    MalformedUpstreamAnswer,
    ModelNotFound,
    NotInitialised,
    PermissionDenied,
    SecretError,
    TooManyFailedAuthentications,
    UpstreamError,
)
from domain.spend_caps import SpendCapReached
from tests.fakes.provider import FakeProvider
from tests.unit.test_billed_call import SHAPE, CountingBilling, World, refused, world  # noqa: F401  (the fixture)

ROOT = Path(__file__).resolve().parents[2]

START_FAILURES = [
    (InvalidRequest("providers of this kind take no tools", param="tools"),),
    (UpstreamError("provider 'primary' rejected the request", status=400, code="upstream_rejected_request"),),
    (UpstreamError("provider 'primary' does not know this model", status=404, code="model_not_found"),),
    (UpstreamError("down", status=503, code="upstream_unavailable", retry_after="3"),) * 3,
    (UpstreamError("slow down", status=429, code="upstream_rate_limited", retry_after="1"),) * 3,
    (KeyError("choices"),),  # a bug of ours: a 500 internal_error
]
START_FAILURE_IDS = ["invalid-request", "rejected", "model-not-found", "all-unavailable", "all-rate-limited", "bug"]


def answered(error: Exception) -> tuple[int, str | None]:
    response = response_for(error)
    return response.status_code, orjson.loads(bytes(response.body))["error"]["code"]


def recorded(world: World, request_id: UUID) -> tuple[int, str | None]:
    details = world.record(request_id).details
    return details.status, details.error_code


def teapot(error: Exception) -> int:
    """Another mapping: every error is a 418."""
    return 418


def refused_hold(world: World, calls: BilledCalls) -> tuple[InsufficientCredits, UUID]:
    request_id = uuid4()

    async def scenario() -> Any:
        await calls.open(world.key, SHAPE, request_id)

    with pytest.raises(InsufficientCredits) as error:
        asyncio.run(scenario())
    return error.value, request_id


@pytest.mark.parametrize(
    "error",
    [
        InvalidRequest("bad", param="n"),
        InsufficientCredits(uuid4(), needed=5, available=1),
        SpendCapReached("account", "day", 100, retry_after_seconds=3600),
        TooManyFailedAuthentications(retry_after_seconds=60),
        PermissionDenied("no"),
        ModelNotFound("no"),
        NotInitialised("no"),
        SecretError("no"),
        MalformedUpstreamAnswer("no"),
        UpstreamError("slow down", status=429, code="upstream_rate_limited", retry_after="7"),
        UpstreamError("gone", status=410, code="upstream_rejected_request"),
        RuntimeError("a bug"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_status_of_is_the_status_the_api_answers_the_error_with(error: Exception) -> None:
    assert status_of(error) == response_for(error).status_code


def test_an_upstream_errors_status_is_the_one_it_carries() -> None:
    assert status_of(UpstreamError("teapot upstream", status=418, code="upstream_rejected_request")) == 418


@pytest.mark.parametrize("outcomes", START_FAILURES, ids=START_FAILURE_IDS)
def test_a_request_that_could_not_start_is_recorded_with_the_status_it_is_answered_with(
    world: World, outcomes: tuple[Exception, ...]
) -> None:
    Accounts(world.ledger).grant_credits("acme", 10 * world.worst)
    error, request_id = refused(world.calls(FakeProvider(*outcomes)), world.key)
    assert recorded(world, request_id) == answered(error)


def test_a_refused_hold_is_recorded_with_the_status_it_is_answered_with(world: World) -> None:
    error, request_id = refused_hold(world, world.calls(FakeProvider()))  # no credit granted
    assert recorded(world, request_id) == answered(error) == (402, "insufficient_credits")


def test_a_reached_spend_cap_is_recorded_with_the_status_it_is_answered_with(world: World) -> None:
    Accounts(world.ledger).grant_credits("acme", 10 * world.worst)
    Accounts(world.ledger).set_spend_caps("acme", day=1, month=None)
    calls = world.calls(FakeProvider())
    request_id = uuid4()

    async def scenario() -> Any:
        await calls.open(world.key, SHAPE, request_id)

    with pytest.raises(SpendCapReached) as error:
        asyncio.run(scenario())
    assert recorded(world, request_id) == answered(error.value) == (429, "spend_cap_reached")


@pytest.mark.parametrize("outcomes", START_FAILURES, ids=START_FAILURE_IDS)
def test_a_failure_to_start_is_recorded_with_the_status_of_the_mapping_the_billing_was_given(
    world: World, outcomes: tuple[Exception, ...]
) -> None:
    Accounts(world.ledger).grant_credits("acme", 10 * world.worst)
    error, request_id = refused(world.calls(FakeProvider(*outcomes), statuses=teapot), world.key)
    assert recorded(world, request_id)[0] == 418
    assert recorded(world, request_id)[1] == getattr(error, "code", "internal_error")


def test_a_refused_hold_is_recorded_with_the_status_of_the_mapping_the_billing_was_given(world: World) -> None:
    _, request_id = refused_hold(world, world.calls(FakeProvider(), statuses=teapot))
    assert recorded(world, request_id) == (418, "insufficient_credits")


def failures_recorded(calls: BilledCalls) -> list[tuple[int, str]]:
    """(status, code) of each request the calls failed, in order."""
    assert isinstance(calls.billing, CountingBilling)
    return [(status, code) for _, status, code in calls.billing.failed]


def unreadable_document(world: World, calls: BilledCalls) -> UpstreamError:
    """Start a whole answer the provider garbles; the error its caller is answered with."""

    async def answer(_: Any, __: Any, ___: Any) -> bytes:
        return b"not json"

    async def scenario() -> None:
        opened = await calls.open(world.key, SHAPE, uuid4())
        call = await calls.start_document(opened, answer, {"model": "smart", "input": "hello"})
        await calls.document(call)

    with pytest.raises(UpstreamError) as error:
        asyncio.run(scenario())
    return error.value


def test_an_unreadable_whole_answer_is_recorded_with_the_status_it_is_answered_with(world: World) -> None:
    Accounts(world.ledger).grant_credits("acme", 10 * world.worst)
    calls = world.calls(FakeProvider())
    error = unreadable_document(world, calls)
    assert failures_recorded(calls) == [answered(error)] == [(502, "upstream_bad_response")]


def test_an_unreadable_whole_answer_is_recorded_with_the_status_of_the_mapping_given(world: World) -> None:
    Accounts(world.ledger).grant_credits("acme", 10 * world.worst)
    calls = world.calls(FakeProvider(), statuses=teapot)
    unreadable_document(world, calls)
    assert failures_recorded(calls) == [(418, "upstream_bad_response")]


def test_the_composition_root_gives_the_billing_the_apis_mapping() -> None:
    ledger = in_memory_ledger()
    ledger.initialise()
    services = build_services(Settings(), ledger=ledger)
    try:
        for error in (
            InsufficientCredits(uuid4(), needed=5, available=1),
            SpendCapReached("account", "day", 100, retry_after_seconds=3600),
            InvalidRequest("bad"),
            SecretError("no"),
            UpstreamError("teapot upstream", status=418, code="upstream_rejected_request"),
            RuntimeError("a bug"),
        ):
            assert services.billing.status_of(error) == status_of(error), error
    finally:
        services.close()


def test_the_services_the_cli_builds_do_not_load_fastapi() -> None:
    """The mapping lives in adapters/http/errors.py, but bootstrap imports it at its first
    use: building the services (what every CLI command does) still loads no FastAPI."""
    script = (
        "import sys\n"
        "from adapters.bootstrap import build_services, in_memory_ledger\n"
        "from adapters.settings import Settings\n"
        "ledger = in_memory_ledger()\n"
        "ledger.initialise()\n"
        "build_services(Settings(), ledger=ledger).close()\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in ('fastapi', 'starlette')))\n"
    )
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    assert ran.stdout.strip() == "[]"
