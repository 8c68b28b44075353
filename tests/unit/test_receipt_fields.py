"""The charge's fields on a usage object (adapters/http/receipts.py): ``cost`` a JSON number
(OpenRouter's ``usage.cost``: the nearest double, for clients that read it as a float), the
exact charge beside it as ``cost_decimal`` (decimal text in credits) and
``cost_nanocredits`` (an integer), even where a double cannot hold the charge; and a plain
answer's receipt headers, which ``ReceiptResponse`` encodes itself, exactly as Starlette's
``Response`` sends them."""

from datetime import UTC, datetime
from decimal import Decimal
from uuid import uuid4

import orjson
import pytest
from starlette.responses import Response

from adapters.http.receipts import ReceiptResponse, receipt_fields, receipt_headers, receipt_usage
from application.billing import OpenedRequest, Receipt, RequestShape
from application.ports import Admission, WindowState
from application.rate_limits import AdmittedRequest
from domain.usage import Usage


def receipt(charge: int) -> Receipt:
    return Receipt(uuid4(), charge, charge, 0, 3, True, Usage(input_tokens=7, output_tokens=2))


def test_cost_is_a_json_number_and_the_exact_charge_rides_beside_it() -> None:
    charge = 10**18 + 1  # more significant digits than a double keeps
    fields = receipt_fields(receipt(charge))
    assert type(fields["cost"]) is float and fields["cost"] == charge / 10**9
    assert fields["cost_decimal"] == "1000000000.000000001" and fields["cost_nanocredits"] == charge
    assert Decimal(fields["cost_decimal"]) * 10**9 == charge
    wire = orjson.loads(orjson.dumps(fields))
    assert isinstance(wire["cost"], float) and wire["cost_nanocredits"] == charge


def test_a_small_charge_is_its_credits_as_a_number_and_a_usage_object_carries_all_three() -> None:
    usage = receipt_usage(receipt(71_000_000), {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9})
    assert (usage["cost"], usage["cost_decimal"], usage["cost_nanocredits"]) == (0.071, "0.071000000", 71_000_000)
    assert b'"cost":0.071,' in orjson.dumps(usage)  # a number on the wire, never '"0.071000000"'
    assert usage["price_book_version"] == 3 and usage["usage_source"] == "provider"


def _opened(admission: Admission | None) -> OpenedRequest:
    opened = OpenedRequest(
        request_id=uuid4(),
        account_id=uuid4(),
        api_key_id=uuid4(),
        shape=RequestShape(model="openai/gpt-4o-mini", prompt_bytes=10, max_output_tokens=5, choices=1, stream=False),
        targets=(),
        price_book_version=3,
        hold=100,
        started=0.0,
        started_at=datetime(2026, 12, 7, tzinfo=UTC),
    )
    return opened if admission is None else opened.with_rate_limit(AdmittedRequest((), admission))


@pytest.mark.parametrize("priced", [True, False])
@pytest.mark.parametrize(
    "admission",
    [
        None,
        Admission(True, 0.0, None, WindowState(60, 59, 0.0), None, "1"),
        Admission(True, 0.0, None, WindowState(60, 0, 1.5), WindowState(10_000, 9_000, 0.02), "2"),
    ],
)
def test_a_receipts_answer_sends_what_a_starlette_response_with_its_headers_sends(
    priced: bool, admission: Admission | None
) -> None:
    charged = Receipt(uuid4(), 71_000_000, 71_000_000, 0, 3, priced, Usage(input_tokens=7, output_tokens=2))
    opened = _opened(admission)
    body = b'{"id":"chatcmpl-1","choices":[]}'
    plain = Response(body, media_type="application/json", headers=receipt_headers(charged, opened))
    answer = ReceiptResponse(body, charged, opened)
    assert (answer.status_code, answer.body, answer.raw_headers) == (plain.status_code, plain.body, plain.raw_headers)
    assert ((b"x-tallyhub-price-missing", b"true") in answer.raw_headers) == (not priced)
    assert any(name == b"x-ratelimit-limit-requests" for name, _ in answer.raw_headers) == (admission is not None)
