"""``GET /admin/v1/providers/{name}/models``, behind the admin key: the models the provider
itself lists, asked with the operator's stored credential and marked priced / routable /
unpriced; the same document ``tallyhub models discover NAME --json`` prints
(adapters/cli/model_commands.py). Read-only. A provider that fails answers in the API's
error shape with the status the provider's failure maps to (502 ``upstream_auth_failed``
for a refused credential, 504 ``upstream_timeout``, ...)."""

from typing import Any

import anyio
from fastapi import APIRouter

from adapters.cli.model_commands import discovery_json, model_discovery
from adapters.http.admin import Admin

router = APIRouter(prefix="/admin/v1", tags=["admin: model discovery"])


@router.get("/providers/{name}/models")
async def discover_models(name: str, services: Admin) -> dict[str, Any]:
    """The provider's own model list, each with ``mark`` (``priced``, ``routable`` or
    ``unpriced``), the aliases that reach it, and the token limits and details the
    provider gives."""
    discovery = model_discovery(services)
    plan = await anyio.to_thread.run_sync(discovery.plan, name)
    return discovery_json(await discovery.discover(plan, services.providers))
