"""The charge's fields on a usage object (adapters/http/receipts.py): ``cost`` a JSON number
(OpenRouter's ``usage.cost``: the nearest double, for clients that read it as a float), the
exact charge beside it as ``cost_decimal`` (decimal text in credits) and
``cost_nanocredits`` (an integer), even where a double cannot hold the charge."""

from decimal import Decimal
from uuid import uuid4

import orjson

from adapters.http.receipts import receipt_fields, receipt_usage
from application.billing import Receipt
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
