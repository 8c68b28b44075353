"""Ollama's ``GET /api/tags``: ``{"models": [{"name", "model", "modified_at", "size",
"digest", "details": {...}}]}``, the models pulled on that server. A ``:latest`` tag is
dropped from the id (``llama3.2:latest`` is listed as ``llama3.2``, the name callers use;
Ollama resolves both alike). Ollama lists no token limits here."""

from typing import Any

import aiohttp

from adapters.providers.listed_models import get_json, items_of, text
from application.model_discovery import ProviderModel
from application.routing import Route

DETAIL_FIELDS = ("family", "parameter_size", "quantization_level")


async def list_ollama_models(
    session: aiohttp.ClientSession, route: Route, url: str, headers: dict[str, str]
) -> list[ProviderModel]:
    document = await get_json(session, route, url, headers=headers)
    return [_model(item) for item in items_of(route, document, "models") if text(item.get("name"))]


def _model(item: dict[str, Any]) -> ProviderModel:
    details: dict[str, Any] = {name: item[name] for name in ("size", "modified_at") if item.get(name) is not None}
    about = item.get("details")
    if isinstance(about, dict):
        details.update({name: about[name] for name in DETAIL_FIELDS if text(about.get(name))})
    return ProviderModel(id=item["name"].removesuffix(":latest"), details=details)
