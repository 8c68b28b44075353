"""``GET /admin/v1/audit``: the audit log, newest first, behind the admin key, filtered as
``tallyhub audit`` filters it (adapters/cli/audit_log_commands.py) and answering what its
``--json`` prints: ``{"data": [{"position", "at", "actor", "action", "target", "summary",
"aggregate_id"}, …]}``; ``actor`` is null where the event recorded none (``?actor=unrecorded``
selects those). A bad time or an unknown action is a 400 in the API's error shape."""

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query

from adapters.cli.audit_log_commands import MAX_LIMIT, audit_rows
from adapters.http.admin import Admin
from adapters.time_window import parse_instant

router = APIRouter(prefix="/admin/v1", tags=["admin: audit"])


@router.get("/audit")
async def list_audit(
    services: Admin,
    actor: Annotated[str | None, Query(description="cli, admin:<fingerprint>, payments, … or unrecorded")] = None,
    action: Annotated[str | None, Query(description="an action (key.revoked) or a kind of them (key)")] = None,
    target: Annotated[str | None, Query(description="a part of the target, any case")] = None,
    since: Annotated[str | None, Query(description="ISO 8601; from this time (UTC unless it names a zone)")] = None,
    until: Annotated[str | None, Query(description="ISO 8601; before this time")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> dict[str, Any]:
    start = parse_instant(since, "since") if since else None
    end = parse_instant(until, "until") if until else None

    def query() -> list[dict[str, Any]]:
        return audit_rows(services, actor=actor, action=action, target=target, since=start, until=end, limit=limit)

    return {"data": await anyio.to_thread.run_sync(query)}
