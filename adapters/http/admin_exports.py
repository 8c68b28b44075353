"""Exports and verify under ``/admin/v1``, behind the admin key.

``POST /exports`` writes an export into ``$TALLYHUB_DATA_DIR/exports/`` and returns its
manifest (the document ``tallyhub export --json`` prints); ``GET /exports/{id}`` streams
the file, ``GET /exports/{id}/manifest`` its manifest; ``POST /verify`` runs
``tallyhub verify`` (``?from=&to=``: of one window) and returns its report (``ok`` false
with the problems listed).
``POST /exports?background=true`` answers 202 at once with a job instead
(adapters/http/admin_jobs.py); its result, once succeeded, is the same manifest."""

import json
from pathlib import Path
from typing import Annotated, Any, Literal
from uuid import UUID

import anyio
from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from adapters.cli.audit_commands import run_verify
from adapters.exports.exporter import list_exports, manifest_path
from adapters.exports.formats import FORMATS
from adapters.http.admin import Admin
from adapters.http.admin_jobs import ACCEPTED_RESPONSE, accepted
from adapters.presenters import plain
from adapters.services import Services
from adapters.time_window import optional_instant
from adapters.workers.jobs import EXPORT, export_now, export_params
from application.verify_window import VerifyWindow
from domain.errors import NotFound

router = APIRouter(prefix="/admin/v1", tags=["admin: exports"])


@router.post("/exports", status_code=201, responses=ACCEPTED_RESPONSE)
async def post_export(
    services: Admin,
    kind: Annotated[Literal["ledger", "usage", "requests"], Query()],
    since: Annotated[str | None, Query(alias="from", description="first instant included, ISO 8601")] = None,
    until: Annotated[str | None, Query(alias="to", description="first instant excluded, ISO 8601")] = None,
    file_format: Annotated[Literal["csv", "jsonl"], Query(alias="format")] = "csv",
    background: Annotated[bool, Query(description="answer 202 with a job at once; its result is the manifest")] = False,
) -> Any:
    """Write the export and return its manifest (row count, totals, event range, SHA-256, chain)."""
    params = export_params(kind, since, until, file_format)
    if background:
        return accepted(await anyio.to_thread.run_sync(services.jobs.submit, EXPORT, params))
    return await anyio.to_thread.run_sync(export_now, services, params)


@router.get("/exports")
async def get_exports(services: Admin) -> dict[str, Any]:
    """Every recorded export, oldest first, with its digest, row count and chain links."""
    return {"exports": plain(await anyio.to_thread.run_sync(list_exports, services))}


@router.get("/exports/{export_id}", response_class=FileResponse)
async def get_export_file(export_id: str, services: Admin) -> FileResponse:
    """The export's file, streamed."""
    entry = await anyio.to_thread.run_sync(_recorded, services, export_id)
    path = Path(entry["path"])
    return FileResponse(
        path,
        media_type=FORMATS[entry["format"]].media_type,
        filename=path.name,
        headers={"x-export-sha256": entry["sha256"]},
    )


@router.get("/exports/{export_id}/manifest")
async def get_export_manifest(export_id: str, services: Admin) -> dict[str, Any]:
    entry = await anyio.to_thread.run_sync(_recorded, services, export_id)
    manifest: dict[str, Any] = json.loads(manifest_path(Path(entry["path"])).read_text())
    return manifest


@router.post("/verify")
async def post_verify(
    services: Admin,
    since: Annotated[
        str | None, Query(alias="from", description="first record time included, ISO 8601: verify one window")
    ] = None,
    until: Annotated[str | None, Query(alias="to", description="first record time excluded, ISO 8601")] = None,
) -> dict[str, Any]:
    """Recompute balances from the events and compare them with the read models; check holds,
    charges, replays and every recorded export still on disk. ``ok`` is false on any mismatch.
    With ``from``/``to``: only the requests recorded in ``[from, to)`` (``tallyhub verify
    --from --to``; ``checked.window`` names it, ``notes`` what a window does not check)."""
    window = VerifyWindow.of(optional_instant(since, "from"), optional_instant(until, "to"))
    return await anyio.to_thread.run_sync(lambda: run_verify(services, [], window=window))


def _recorded(services: Services, export_id: str) -> dict[str, Any]:
    try:
        wanted = str(UUID(export_id))  # the dashed id, or the 32 hex digits older manifests name
    except ValueError:
        raise NotFound(f"no export {export_id} with its file on this server") from None
    for entry in list_exports(services):
        if (
            entry["export_id"] == wanted
            and Path(entry["path"]).exists()
            and manifest_path(Path(entry["path"])).exists()
        ):
            return entry
    raise NotFound(f"no export {export_id} with its file on this server")
