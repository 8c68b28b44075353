"""How the charge travels with a response: headers on plain responses, and fields
added to ``usage`` in the final chunk of a stream (as OpenRouter does with
``usage.cost``). ``cost`` is a JSON number in credits, as OpenRouter's is and as clients
that read it (LiteLLM's SDK) expect: the nearest double to the charge, for display. The
exact charge is ``cost_nanocredits`` (an integer) and ``cost_decimal`` (decimal text in
credits, never rounded). The counts that priced the charge and that OpenAI's usage
object has no field for (cache writes by TTL, web search calls) are added too, each only
when it is not 0, so a response without them is unchanged."""

from typing import Any

from starlette.responses import Response

from adapters.http.rate_limit_headers import opened_rate_limit_headers
from application.billing import OpenedRequest, Receipt
from domain.money import NANOCREDITS_PER_CREDIT, format_credits


def receipt_headers(receipt: Receipt, opened: OpenedRequest | None = None) -> dict[str, str]:
    """The charge, and the rate-limit headers of ``opened`` when limits apply to it."""
    headers = {
        "x-tallyhub-charge": format_credits(receipt.charge),
        "x-tallyhub-charge-nanocredits": str(receipt.charge),
        "x-tallyhub-price-book-version": str(receipt.price_book_version),
        "x-tallyhub-usage-source": receipt.usage.source,
    }
    if not receipt.priced:
        headers["x-tallyhub-price-missing"] = "true"
    if opened is not None and opened.rate_limit is not None:
        headers.update(opened_rate_limit_headers(opened))
    return headers


class ReceiptResponse(Response):
    """A whole JSON answer, sent as it came, with its receipt's headers: what
    ``Response(body, media_type="application/json", headers=receipt_headers(receipt, opened))``
    sends, header for header and in that order, but encoded once here (Starlette's
    ``init_headers`` lowercases, encodes and scans the headers again on every answer)."""

    media_type = "application/json"

    def __init__(self, body: bytes, receipt: Receipt, opened: OpenedRequest | None = None) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        headers = [(name.encode(), value.encode("latin-1")) for name, value in receipt_headers(receipt, opened).items()]
        headers.append((b"content-length", str(len(body)).encode()))
        headers.append(_JSON_CONTENT_TYPE)
        self.raw_headers = headers


_JSON_CONTENT_TYPE = (b"content-type", b"application/json")


def receipt_usage(receipt: Receipt, upstream_usage: dict[str, Any] | None) -> dict[str, Any]:
    usage: dict[str, Any] = (
        dict(upstream_usage)
        if upstream_usage
        else {
            "prompt_tokens": receipt.usage.input_tokens,
            "completion_tokens": receipt.usage.output_tokens,
            "total_tokens": receipt.usage.total_tokens,
        }
    )
    usage.update(receipt_fields(receipt))
    return usage


def receipt_fields(receipt: Receipt) -> dict[str, Any]:
    """The charge's fields, as every ingress's usage object carries them (the module docstring)."""
    fields: dict[str, Any] = {
        "cost": receipt.charge / NANOCREDITS_PER_CREDIT,
        "cost_decimal": format_credits(receipt.charge),
        "cost_nanocredits": receipt.charge,
        "price_book_version": receipt.price_book_version,
        "usage_source": receipt.usage.source,
    }
    for name in CHARGED_COUNTS:
        if getattr(receipt.usage, name):
            fields[name] = getattr(receipt.usage, name)
    if not receipt.priced:
        fields["price_missing"] = True
    return fields


CHARGED_COUNTS = ("cache_write_5m_tokens", "cache_write_1h_tokens", "web_search_calls")
