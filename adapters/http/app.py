"""``create_app(services)``: the FastAPI application. Nothing is built at import time;
the lifespan owns the shared upstream HTTP client, the credential re-probe task and, in
embedded mode, the in-process projector and the hold/grant-expiry sweeps. In server mode
(PostgreSQL and Redis) ``tallyhub worker`` runs those two instead, woken after each commit
(adapters/workers/wake.py), so ``serve`` spends its CPU on requests."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import aiohttp
from fastapi import FastAPI
from starlette.types import ASGIApp

from adapters.http import (
    admin,
    admin_audit,
    admin_deliveries,
    admin_exports,
    admin_jobs,
    admin_keys,
    admin_models,
    admin_price_import,
    admin_reconcile,
    admin_replays,
    admin_statements,
    admin_webhooks,
    chat,
    count_tokens,
    embeddings,
    images,
    me,
    messages,
    metrics,
    models,
    payments,
    responses,
    responses_stored,
)
from adapters.http.access_log import AccessLogMiddleware
from adapters.http.docs import install_docs
from adapters.http.drain import DrainGuard, watch_signals
from adapters.http.edge import EdgeGuard, client_address
from adapters.http.errors import TopUpLinks, install_error_handlers
from adapters.http.health import HealthRoutes, serve_readiness
from adapters.http.health import router as health_router
from adapters.http.hot_path import ErrorHandler, HotPath, TallyhubApp
from adapters.http.hot_routes import HotRoutes
from adapters.http.request_id import RequestIdMiddleware
from adapters.http.schemas import document_hot_routes
from adapters.providers.registry import build_providers
from adapters.services import Services
from adapters.workers.credential_probe import run_probes
from adapters.workers.deliveries import dispatcher_for, run_deliveries
from adapters.workers.hold_sweeper import run_sweeps
from adapters.workers.jobs import run_jobs
from application.auth_throttle import AuthThrottle
from application.shutdown import shutdown_check


def create_app(services: Services, *, run_projections: bool = True) -> TallyhubApp:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=True) as session:
            services.providers.update(build_providers(session, services.settings))
            services.ledger.start_group_commit()
            if services.metrics is not None and services.ledger.writer is not None:
                services.ledger.writer.on_batch = services.metrics.batch_committed
            if services.health_sync is not None:
                services.health_sync.start()
            embedded = not services.settings.server_mode
            projecting = run_projections and embedded and services.read_models is not None
            if projecting:
                services.read_models.runner.start()
            background = [asyncio.create_task(run_probes(services, services.settings.probe_interval_seconds))]
            if embedded:
                background.append(asyncio.create_task(run_sweeps(services, services.settings.sweep_interval_seconds)))
                background.append(asyncio.create_task(run_deliveries(dispatcher_for(services))))  # webhooks
                background.append(asyncio.create_task(run_jobs(services.jobs)))  # background exports, replays
            signals = watch_signals(services.shutdown)  # SIGTERM: drain first (application/shutdown.py)
            try:
                yield
            finally:
                await services.shutdown.stopped()  # every request closed (settled) before the writer stops
                signals.close()
                for task in background:
                    task.cancel()
                services.ledger.stop_group_commit()
                if projecting:
                    services.read_models.runner.stop()
                if services.wake is not None:
                    services.wake.close()
                if services.health_sync is not None:
                    services.health_sync.close()
                if services.rate_limiter is not None:
                    await services.rate_limiter.aclose()  # the Redis limiter's connection pool

    # FastAPI's OpenTelemetry hook asks three global providers on every request (~31,000
    # instructions, docs/performance.md); Tallyhub reports through /metrics and its access log.
    app = TallyhubApp(
        title="Tallyhub",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.services = services
    app.state.readiness = readiness = serve_readiness(services)
    readiness.checks.append(shutdown_check(services.shutdown))  # /ready: 503 from SIGTERM on
    throttle = AuthThrottle(limit=services.settings.auth_failure_limit)  # per process
    app.state.auth_throttle = throttle
    install_error_handlers(app, on_auth_failed=lambda request: throttle.failed(client_address(request.scope)))
    app.include_router(chat.router)
    app.include_router(messages.router)
    app.include_router(count_tokens.router)
    app.include_router(responses.router)
    app.include_router(embeddings.router)
    app.include_router(images.router)
    app.include_router(models.router)
    app.include_router(admin.router)
    app.include_router(admin_keys.router)
    app.include_router(admin_models.router)  # GET /admin/v1/providers/{name}/models
    app.include_router(admin_price_import.router)  # POST /admin/v1/prices/import, GET /admin/v1/prices/drift
    app.include_router(admin_statements.router)
    app.include_router(admin_reconcile.router)
    app.include_router(admin_replays.router)
    app.include_router(admin_exports.router)
    app.include_router(admin_jobs.router)  # GET /admin/v1/jobs, /admin/v1/jobs/{id}
    app.include_router(admin_webhooks.router)  # /admin/v1/webhooks, /admin/v1/accounts/{account}/alerts
    app.include_router(admin_deliveries.router)  # GET /admin/v1/webhooks/deliveries
    app.include_router(admin_audit.router)  # GET /admin/v1/audit
    app.include_router(me.router)
    app.include_router(responses_stored.router)  # GET/DELETE /v1/responses/{id} (TALLYHUB_RESPONSES_STORE)
    app.include_router(payments.router)
    app.include_router(metrics.router)
    app.include_router(health_router)
    install_docs(app)
    document_hot_routes(app)  # the hot routes' bodies are parsed by hand: their schemas, for /openapi.json
    # Added first, so innermost: every request but the hot routes' passes it.
    app.add_middleware(EdgeGuard, services=services, throttle=throttle)
    app.add_middleware(DrainGuard, shutdown=services.shutdown)  # tracks every request; 503 while draining
    app.add_middleware(HealthRoutes, readiness=readiness)  # /health, /ready: before the throttle and the routes
    if services.access_log is not None:  # inside RequestIdMiddleware: reads its id
        app.add_middleware(AccessLogMiddleware, access_log=services.access_log)
    if services.settings.topup_url:  # every 402 carries the top-up link (adapters/http/errors.py)
        app.add_middleware(TopUpLinks, template=services.settings.topup_url)
    app.add_middleware(RequestIdMiddleware)  # added last, so outermost: every response carries the id
    serve_hot_routes(app, services, throttle)
    return app


def serve_hot_routes(app: TallyhubApp, services: Services, throttle: AuthThrottle) -> None:
    """The hot routes, dispatched before FastAPI's layers down the hot path, which keeps what
    the middleware above does for them (adapters/http/hot_path.py)."""
    routes = HotRoutes(
        endpoints={
            ("POST", "/v1/chat/completions"): chat.chat_completions,
            ("POST", "/v1/messages"): messages.create_message,
            ("POST", "/v1/messages/count_tokens"): count_tokens.count_tokens,
            ("POST", "/v1/responses"): responses.create_response,
            ("POST", "/v1/embeddings"): embeddings.create_embeddings,
        },
        throttle=throttle,
        error_responses={
            ("POST", "/v1/messages"): messages.anthropic_error,
            ("POST", "/v1/messages/count_tokens"): messages.anthropic_error,
        },
    )
    # The handler Starlette's ServerErrorMiddleware calls (install_error_handlers installs it).
    on_error = cast(ErrorHandler, app.exception_handlers[Exception])
    path: ASGIApp = HotPath(routes, shutdown=services.shutdown, access_log=services.access_log, on_error=on_error)
    if services.settings.topup_url:
        path = TopUpLinks(path, template=services.settings.topup_url)
    app.serve_hot(routes, path)
