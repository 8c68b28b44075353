"""``POST /admin/v1/payments/webhook``: top-ups and refunds from a payment system.

Authenticated by signature, not by the admin key, the way payment platforms sign
their webhooks: the ``Tallyhub-Signature`` header is ``t=<unix seconds>,v1=<hex>``
where ``<hex>`` is HMAC-SHA256 under ``TALLYHUB_PAYMENTS_WEBHOOK_SECRET`` of
``"<t>." + raw body``; a timestamp further than the tolerance from now is refused, so
a captured request cannot be replayed later. A payment id is credited at most once and
a refund id debited at most once (by identity in the ledger), so re-deliveries are
answered 200 with ``"duplicate": true`` and change nothing.

Body: ``{"id": "evt_1", "type": "payment.succeeded" | "payment.refunded",
"data": {"account": "acme", "payment_id": "pay_1", "refund_id": "re_1"?, "amount": "10.50"}}``
(amount in credits, decimal text, at most ``bounds.MAX_AMOUNT``). Other event types are
acknowledged and ignored. A refund names the payment it gives back (``payment_id``): that
payment must have been credited to the same account (404 ``payment_not_found``), and the
refunds of a payment never add up to more than it (400 ``refund_exceeds_payment``). A
payment or refund id delivered again with a different amount or payment is refused
(409 ``idempotency_conflict``) rather than answered as a duplicate.
"""

import time
from typing import Any

import anyio
import orjson
from fastapi import APIRouter, Request

from adapters.crypto.webhook_signature import SIGNATURE_HEADER, verify
from adapters.crypto.webhook_signature import InvalidSignature as InvalidSignature  # re-exported
from adapters.crypto.webhook_signature import sign as sign  # re-exported: tests and integrators sign with it
from adapters.http.services import read_body, services_of
from domain.errors import IdempotencyConflict, InvalidRequest, NotInitialised, TallyhubError
from domain.money import format_credits, parse_credits

router = APIRouter(prefix="/admin/v1", tags=["payments"])
MAX_BODY_BYTES = 1024 * 1024  # also enforced by the edge layer (adapters/http/edge.py) before the body is read


@router.post("/payments/webhook")
async def payments_webhook(request: Request) -> dict[str, Any]:
    services = services_of(request)
    secret = services.settings.payments_webhook_secret
    if not secret:
        raise NotInitialised("the payments webhook is not configured (set TALLYHUB_PAYMENTS_WEBHOOK_SECRET)")
    raw = await read_body(request, MAX_BODY_BYTES)
    verify(
        secret,
        raw,
        request.headers.get(SIGNATURE_HEADER),
        tolerance=services.settings.payments_tolerance_seconds,
        now=time.time(),
    )
    event = _event(raw)
    kind, data = event["type"], event["data"]
    if kind not in ("payment.succeeded", "payment.refunded"):
        return {"id": event["id"], "ignored": True}
    amount = parse_credits(_text(data, "amount"), param="data.amount")
    if amount <= 0:
        raise InvalidRequest("amount must be positive", param="data.amount")
    account, payment_id = _text(data, "account"), _text(data, "payment_id")
    try:
        if kind == "payment.succeeded":
            result = await anyio.to_thread.run_sync(services.accounts.record_payment, account, payment_id, amount)
        else:
            refund_id = _text(data, "refund_id")
            result = await anyio.to_thread.run_sync(
                lambda: services.accounts.reverse_payment(account, refund_id, amount, payment_id)
            )
    except TallyhubError as error:
        _name_in_data(error, "data.payment_id" if kind == "payment.succeeded" else "data.refund_id")
        raise
    return {
        "id": event["id"],
        "type": kind,
        "account_id": str(result.account_id),
        "duplicate": not result.credited,
        "applied": result.amount,
        "applied_credits": format_credits(result.amount),
    }


def _event(raw: bytes) -> dict[str, Any]:
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("the webhook body is not valid JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str) or not isinstance(event.get("data"), dict):
        raise InvalidRequest("the webhook body needs 'id', 'type' and 'data'")
    if not isinstance(event.get("id"), str):
        raise InvalidRequest("the webhook body needs an 'id'", param="id")
    return event


def _name_in_data(error: TallyhubError, key_field: str) -> None:
    """Name the body's field in the ledger's refusal: its ``amount`` is ``data.amount`` here,
    and the idempotency key of a payment or refund is its ``data.payment_id`` / ``data.refund_id``."""
    if isinstance(error, IdempotencyConflict):
        error.param = key_field
    elif isinstance(error, InvalidRequest) and error.param == "amount":
        error.param = "data.amount"


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"data.{name} must be a non-empty string", param=f"data.{name}")
    return value
