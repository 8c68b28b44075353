"""Account statements under ``/admin/v1``, behind the admin key: the same document
``tallyhub statement ACCOUNT --json`` prints (adapters/cli/statement_commands.py), read
from the ledger-entries read model after catching it up."""

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query

from adapters.cli.statement_commands import read_statement
from adapters.http.admin import Admin
from adapters.time_window import optional_instant

router = APIRouter(prefix="/admin/v1", tags=["admin: statements"])


@router.get("/accounts/{account}/statement")
async def get_statement(
    account: str,
    services: Admin,
    since: Annotated[str | None, Query(alias="from", description="first instant included, ISO 8601")] = None,
    until: Annotated[str | None, Query(alias="to", description="first instant excluded, ISO 8601")] = None,
) -> dict[str, Any]:
    """Every movement of the account's balance in ``[from, to)`` with its event position and
    the running balance after it; opening and closing balances; totals per kind."""
    window = optional_instant(since, "from"), optional_instant(until, "to")
    return await anyio.to_thread.run_sync(lambda: read_statement(services, account, *window))
