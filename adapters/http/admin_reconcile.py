"""Reconciliation under ``/admin/v1``, behind the admin key: the same document
``tallyhub reconcile --json`` prints (adapters/cli/reconcile_commands.py) — provider cost
against charges per credential and day, and the charges whose usage was estimated — read
from the provider rollups and the request log after catching them up."""

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query

from adapters.cli.reconcile_commands import read_reconciliation
from adapters.http.admin import Admin
from adapters.time_window import optional_instant

router = APIRouter(prefix="/admin/v1", tags=["admin: reconciliation"])


@router.get("/reconciliation")
async def get_reconciliation(
    services: Admin,
    since: Annotated[str | None, Query(alias="from", description="first hour included (whole UTC hour)")] = None,
    until: Annotated[str | None, Query(alias="to", description="first hour excluded (whole UTC hour)")] = None,
) -> dict[str, Any]:
    """Per UTC day, provider, credential and model in ``[from, to)``: requests, charged, provider
    cost, margin and margin %, failed attempts and failovers, with totals; and every charge of
    the window whose usage was estimated, with their count and sum."""
    window = optional_instant(since, "from"), optional_instant(until, "to")
    return await anyio.to_thread.run_sync(lambda: read_reconciliation(services, *window))
