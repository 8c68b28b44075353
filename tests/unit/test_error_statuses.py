"""The status a request record keeps for an error is the status the API answers that error
with (adapters/http/errors.py ``response_for``). The billed call records a failed request
before the error reaches HTTP (application/calls.py, application/billing.py), so the two
must agree: a change to one without the other fails here."""

import asyncio
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest

from adapters.http.errors import response_for
from application.accounts import Accounts
from domain.errors import InsufficientCredits, InvalidRequest, UpstreamError
from tests.fakes.provider import FakeProvider
from tests.unit.test_billed_call import SHAPE, World, refused, world  # noqa: F401  (the fixture)


def answered(error: Exception) -> tuple[int, str | None]:
    response = response_for(error)
    return response.status_code, orjson.loads(bytes(response.body))["error"]["code"]


def recorded(world: World, request_id: UUID) -> tuple[int, str | None]:
    details = world.record(request_id).details
    return details.status, details.error_code


@pytest.mark.parametrize(
    "outcomes",
    [
        (InvalidRequest("providers of this kind take no tools", param="tools"),),
        (UpstreamError("provider 'primary' rejected the request", status=400, code="upstream_rejected_request"),),
        (UpstreamError("provider 'primary' does not know this model", status=404, code="model_not_found"),),
        (UpstreamError("down", status=503, code="upstream_unavailable", retry_after="3"),) * 3,
        (UpstreamError("slow down", status=429, code="upstream_rate_limited", retry_after="1"),) * 3,
    ],
    ids=["invalid-request", "rejected", "model-not-found", "all-unavailable", "all-rate-limited"],
)
def test_a_request_that_could_not_start_is_recorded_with_the_status_it_is_answered_with(
    world: World, outcomes: tuple[Exception, ...]
) -> None:
    Accounts(world.ledger).grant_credits("acme", 10 * world.worst)
    error, request_id = refused(world.calls(FakeProvider(*outcomes)), world.key)
    assert recorded(world, request_id) == answered(error)


def test_a_refused_hold_is_recorded_with_the_status_it_is_answered_with(world: World) -> None:
    calls = world.calls(FakeProvider())  # no credit granted: the hold is refused
    request_id = uuid4()

    async def scenario() -> Any:
        await calls.open(world.key, SHAPE, request_id)

    with pytest.raises(InsufficientCredits) as error:
        asyncio.run(scenario())
    assert recorded(world, request_id) == answered(error.value) == (402, "insufficient_credits")
