"""``GET /health`` and ``GET /ready``, for a load balancer.

``/health``: the process answers (200 ``{"status": "ok"}``), nothing else is looked at.
``/ready``: 200 when every check of application/readiness.py passes for this ``serve``
process — the event store answers a query, the deployment is opened with the master key,
the account writer (group commit) runs, and in embedded mode the read models run and are
at most ``TALLYHUB_READY_MAX_LAG_EVENTS`` behind — else 503 with the failing checks.

Both are answered by ``HealthRoutes``, a middleware outside the edge (adapters/http/edge.py);
the hot routes never pass it (adapters/http/hot_path.py). No key, no body limit, no
failed-auth throttle (a load balancer's address is never refused), no routing. The router
below only documents them in ``/openapi.json``
(and answers the same if the middleware is ever left out).
"""

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from adapters.services import Services
from application.readiness import (
    DEFAULT_TIMEOUT_SECONDS,
    Readiness,
    ReadinessReport,
    account_writer_check,
    master_key_check,
    read_models_check,
    store_check,
)

HEALTH_PATH = "/health"
READY_PATH = "/ready"
HEALTHY = orjson.dumps({"status": "ok"})
NO_STORE = {"cache-control": "no-store"}


def serve_readiness(services: Services, *, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> Readiness:
    """The checks of a ``serve`` process; the read models' only in embedded mode (in server
    mode they are ``tallyhub worker``'s, which answers for them on its ``--health-port``)."""
    ledger = services.ledger
    checks = [store_check(ledger.recorder), master_key_check(ledger), account_writer_check(ledger)]
    if not services.settings.server_mode and services.read_models is not None:
        checks.append(read_models_check(services.read_models.runner, services.settings.ready_max_lag_events))
    return Readiness(checks, timeout_seconds=timeout_seconds)


def health_response() -> Response:
    return Response(HEALTHY, media_type="application/json", headers=NO_STORE)


def ready_response(report: ReadinessReport) -> Response:
    return Response(
        orjson.dumps(report.to_dict()),
        status_code=200 if report.ok else 503,
        media_type="application/json",
        headers=NO_STORE,
    )


class HealthRoutes:
    def __init__(self, app: ASGIApp, readiness: Readiness) -> None:
        self.app = app
        self.readiness = readiness

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            path = scope["path"]
            if path == HEALTH_PATH:
                await health_response()(scope, receive, send)
                return
            if path == READY_PATH:
                await ready_response(await self.readiness.evaluate())(scope, receive, send)
                return
        await self.app(scope, receive, send)


# -- the OpenAPI description ----------------------------------------------------------------

router = APIRouter(tags=["health"])

_CHECK = {
    "type": "object",
    "required": ["ok"],
    "properties": {
        "ok": {"type": "boolean"},
        "error": {"type": "string", "description": "What failed; never a secret or a driver's message."},
    },
    "additionalProperties": True,
}
_READY = {
    "type": "object",
    "required": ["status", "checks"],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "unavailable"]},
        "checks": {
            "type": "object",
            "description": "store, master_key, account_writer and, in embedded mode, read_models "
            "(with max_lag_events and each projection's lag).",
            "additionalProperties": _CHECK,
        },
    },
}
_HEALTH_DOC: dict[int | str, dict[str, Any]] = {
    "200": {
        "description": "The process answers.",
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": {"status": {"type": "string", "enum": ["ok"]}}}
            }
        },
    }
}
_READY_DOC: dict[int | str, dict[str, Any]] = {
    "200": {"description": "Every check passes.", "content": {"application/json": {"schema": _READY}}},
    "503": {
        "description": "A check fails; the failing checks say why.",
        "content": {"application/json": {"schema": _READY}},
    },
}


@router.get(HEALTH_PATH, summary="Liveness: the process answers (no key)", responses=_HEALTH_DOC)
async def health() -> Response:
    return health_response()


@router.get(
    READY_PATH, summary="Readiness: store, master key, account writer, read models (no key)", responses=_READY_DOC
)
async def ready(request: Request) -> Response:
    readiness: Readiness = request.app.state.readiness
    return ready_response(await readiness.evaluate())
