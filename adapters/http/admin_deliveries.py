"""``GET /admin/v1/webhooks/deliveries``: the webhook delivery log, behind the admin key,
answering what ``tallyhub webhooks deliveries --json`` prints: ``{"data": [delivery, …]}``,
newest first; ``?failed=true`` only the deliveries that ended ``failed``; ``?limit=N``
(1–1000, default 100). A delivery shows its status (``pending`` | ``delivered`` |
``failed``), attempts, the receiver's last HTTP status, the last error and when the next
attempt is due; never a secret."""

from typing import Any

import anyio
from fastapi import APIRouter, Query

from adapters.http.admin import Admin

router = APIRouter(prefix="/admin/v1", tags=["admin: webhooks"])
MAX_LIMIT = 1000


@router.get("/webhooks/deliveries")
async def list_deliveries(
    services: Admin,
    failed: bool = Query(default=False, description="only deliveries that ended failed"),
    limit: int = Query(default=100, ge=1, le=MAX_LIMIT, description="at most this many, newest first"),
) -> dict[str, Any]:
    found = await anyio.to_thread.run_sync(lambda: services.deliveries.list(failed=failed, limit=limit))
    return {"data": [delivery.plain() for delivery in found]}
