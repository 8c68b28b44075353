"""HTTP's side of the billed call (application/calls.py): the request id the
request-id middleware gave the request, and the endpoints whose answer is one whole
JSON document (embeddings, images): parse → the use case → render."""

from collections.abc import Callable
from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import Response

from adapters.http.disconnect import CallerWatch
from adapters.http.receipts import ReceiptResponse
from adapters.services import Services
from application.billing import RequestShape
from application.failover import Operation
from domain.usage import Usage


def request_id_of(request: Request) -> UUID:
    request_id: UUID = request.scope["state"]["request_id"]
    return request_id


async def billed_document(
    services: Services,
    request: Request,
    api_key: str,
    shape: RequestShape,
    operation: Operation[bytes],
    body: dict[str, Any],
    usage_of: Callable[[dict[str, Any]], Usage],
) -> Response:
    """Open, call ``operation`` with failover, charge the usage the whole answer reports,
    and pass the answer on as it came, with the receipt in headers."""
    calls = services.calls
    opened = await calls.open(api_key, shape, request_id_of(request))
    with CallerWatch(request.receive):  # a caller gone before the answer: a 499, nothing charged
        call = await calls.start_document(opened, operation, body)
    document = await calls.document(call)
    receipt = await calls.complete(call, usage_of(document), ttfb_ms=None)
    return ReceiptResponse(call.result, receipt, opened)
