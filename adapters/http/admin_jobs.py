"""Background jobs under ``/admin/v1``, behind the admin key: ``GET /jobs`` (newest first,
``?status=``) and ``GET /jobs/{id}``. ``POST /exports?background=true`` and
``POST /replays?apply=true&background=true`` submit them (adapters/http/admin_exports.py,
admin_replays.py) and answer 202 with ``{"job": ...}`` and ``Location: /admin/v1/jobs/{id}``."""

from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from adapters.http.admin import Admin
from application.jobs import STATUSES, Job

router = APIRouter(prefix="/admin/v1", tags=["admin: jobs"])

JOB_EXAMPLE = {
    "id": "0b8f5c1e-2a47-4d1e-9a55-3c1b0e7d9a21",
    "kind": "export",
    "status": "succeeded",
    "params": {"kind": "ledger", "from": None, "to": None, "format": "csv"},
    "submitted_by": "admin:3f2a9c1d0e4b",
    "attempts": 1,
    "created_at": "2026-12-07T06:00:00.000000Z",
    "started_at": "2026-12-07T06:00:00.120000Z",
    "finished_at": "2026-12-07T06:00:01.870000Z",
    "result": {"export_id": "…", "rows": 1234, "sha256": "…"},
    "error": None,
}


def _instant(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _error(error: dict[str, Any] | None) -> dict[str, Any] | None:
    """A failed job's error in the API's own shape (``message``, ``type``, ``param``, ``code``)."""
    if error is None:
        return None
    type_ = "server_error"
    if error.get("code") not in ("internal_error", "job_abandoned"):
        type_ = "invalid_request_error"  # what a request's refusal of its input says
    return {"message": error["message"], "type": type_, "param": error.get("param"), "code": error.get("code")}


def job_json(job: Job) -> dict[str, Any]:
    """A job as every answer shows it; a replay's price file is not repeated (its SHA-256 is in the result)."""
    params = {name: value for name, value in job.params.items() if name != "prices"}
    return {
        "id": job.job_id,
        "kind": job.kind,
        "status": job.status,
        "params": params,
        "submitted_by": job.actor,
        "attempts": job.attempts,
        "created_at": _instant(job.created_at),
        "started_at": _instant(job.started_at),
        "finished_at": _instant(job.finished_at),
        "result": job.result,
        "error": _error(job.error),
    }


def accepted(job: Job) -> JSONResponse:
    """202 with the job and where to poll it."""
    return JSONResponse({"job": job_json(job)}, status_code=202, headers={"Location": f"/admin/v1/jobs/{job.job_id}"})


ACCEPTED_RESPONSE: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "with background=true: the job, queued; poll its Location (GET /admin/v1/jobs/{id})",
        "content": {"application/json": {"example": {"job": {**JOB_EXAMPLE, "status": "queued"}}}},
    }
}


@router.get("/jobs", responses={200: {"content": {"application/json": {"example": {"data": [JOB_EXAMPLE]}}}}})
async def list_jobs(
    services: Admin,
    status: Annotated[str | None, Query(description=f"only jobs in this state: {', '.join(STATUSES)}")] = None,
    limit: Annotated[int, Query(description="at most this many, 1 to 1000")] = 100,
) -> dict[str, Any]:
    """The background jobs, newest first."""
    jobs = await anyio.to_thread.run_sync(lambda: services.jobs.list_jobs(status=status, limit=limit))
    return {"data": [job_json(job) for job in jobs]}


@router.get("/jobs/{job_id}", responses={200: {"content": {"application/json": {"example": {"job": JOB_EXAMPLE}}}}})
async def get_job(job_id: str, services: Admin) -> dict[str, Any]:
    """One job: its state, attempts and times; once succeeded its result (the synchronous
    request's answer), once failed its error in the API's shape."""
    job = await anyio.to_thread.run_sync(services.jobs.get_job, job_id)
    return {"job": job_json(job)}
