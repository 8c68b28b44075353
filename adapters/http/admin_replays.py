"""Replays under ``/admin/v1``, behind the admin key: the same document
``tallyhub replay --json`` prints (adapters/cli/replay_commands.py). The request body is
a price file; a dry run unless ``apply=true``. ``apply=true&background=true`` answers 202
at once with a job instead (adapters/http/admin_jobs.py); its result, once succeeded, is the
same document. A dry run is always answered at once."""

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request

from adapters.cli.replay_commands import applied_json, run_replay
from adapters.http.admin import Admin
from adapters.http.admin_jobs import ACCEPTED_RESPONSE, accepted
from adapters.time_window import optional_instant
from adapters.workers.jobs import REPLAY, replay_params
from application.replay import Replayer
from domain.errors import InvalidRequest

router = APIRouter(prefix="/admin/v1", tags=["admin: replays"])


@router.post("/replays", responses=ACCEPTED_RESPONSE)
async def post_replay(
    request: Request,
    services: Admin,
    since: Annotated[str | None, Query(alias="from", description="first instant included, ISO 8601")] = None,
    until: Annotated[str | None, Query(alias="to", description="first instant excluded, ISO 8601")] = None,
    account: Annotated[str | None, Query(description="only this account (a name or an id)")] = None,
    apply: Annotated[bool, Query(description="post the differences as adjustments, once")] = False,
    background: Annotated[
        bool, Query(description="with apply=true: answer 202 with a job at once; its result is this document")
    ] = False,
) -> Any:
    """Re-price the charges recorded in ``[from, to)`` under the price file in the body: old
    charge, new charge and difference per account and model. Read-only unless ``apply``."""
    window = optional_instant(since, "from"), optional_instant(until, "to")
    text = (await request.body()).decode(errors="replace")
    if background:
        if not apply:
            raise InvalidRequest("background=true is for apply=true: a dry run is answered at once", param="background")
        params = replay_params(text, since, until, account)
        return accepted(await anyio.to_thread.run_sync(services.jobs.submit, REPLAY, params))
    return await anyio.to_thread.run_sync(
        lambda: run_replay(services, text, since=window[0], until=window[1], account=account, apply=apply)
    )


@router.get("/replays")
async def list_replays(services: Admin) -> dict[str, Any]:
    """The replays applied so far, in order, with the adjustment each account was due."""
    entries = await anyio.to_thread.run_sync(Replayer(services.ledger).list_applied)
    return {"replays": applied_json(entries)}
