"""``GET /v1/models``: the models the caller may use — priced models of enabled
providers, and aliases that reach one of them (in track mode an unpriced model is
usable but not listed)."""

import anyio
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from adapters.http.services import bearer_token, services_of
from adapters.services import Services

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    services = services_of(request)
    api_key = bearer_token(request)
    models = await anyio.to_thread.run_sync(_visible_models, services, api_key)
    return Response(orjson.dumps({"object": "list", "data": models}), media_type="application/json")


def _visible_models(services: Services, api_key: str) -> list[dict[str, object]]:
    key = services.ledger.authenticate(api_key)
    book = services.ledger.recent_price_book().effective(services.ledger.clock.now())
    enabled: dict[str, bool] = {}
    models = []
    for model in sorted(book.prices):
        provider_name = model.partition("/")[0]
        if provider_name not in enabled:
            provider = services.ledger.recent_provider(provider_name)
            enabled[provider_name] = provider is not None and provider.enabled
        if enabled[provider_name]:
            models.append({"id": model, "object": "model", "created": 0, "owned_by": provider_name})
    listed = {m["id"] for m in models}
    for alias, targets in sorted(services.ledger.recent_aliases().items()):
        if any(target in listed for target in targets):
            models.append({"id": alias, "object": "model", "created": 0, "owned_by": "alias"})
    return [m for m in models if key.allows(str(m["id"]))]
