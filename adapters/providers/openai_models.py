"""``GET {base}/models`` of the OpenAI family (kinds ``openai`` and ``openai-compatible``:
DeepSeek, OpenRouter, xAI, Doubao, Poe, vLLM, ...): ``{"object": "list", "data": [...]}``,
one page. Besides OpenAI's ``id``/``created``/``owned_by``, members add what they know:
OpenRouter ``name``, ``context_length``, ``top_provider.max_completion_tokens`` and
``pricing`` (USD per token, decimal text); vLLM ``max_model_len``; others ``context_window``.
Each is read when present and a positive count; the provider's prices are passed on as it
sent them, for display only (Tallyhub prices with its own price book)."""

from typing import Any

import aiohttp

from adapters.providers.listed_models import get_json, items_of, text, token_count
from application.model_discovery import ProviderModel
from application.routing import Route

CONTEXT_FIELDS = ("context_length", "context_window", "max_model_len")
OUTPUT_FIELDS = ("max_completion_tokens", "max_output_tokens")


async def list_openai_models(session: aiohttp.ClientSession, route: Route, base_url: str) -> list[ProviderModel]:
    headers = {"authorization": f"Bearer {route.secret}"} if route.secret else {}
    document = await get_json(session, route, base_url + "/models", headers=headers)
    return [_model(item) for item in items_of(route, document, "data") if text(item.get("id"))]


def _model(item: dict[str, Any]) -> ProviderModel:
    top: dict[str, Any] = item["top_provider"] if isinstance(item.get("top_provider"), dict) else {}
    details: dict[str, Any] = {}
    for name in ("created", "owned_by"):
        if item.get(name) is not None:
            details[name] = item[name]
    architecture = item.get("architecture")
    if isinstance(architecture, dict) and text(architecture.get("modality")):
        details["modality"] = architecture["modality"]
    if isinstance(item.get("pricing"), dict):
        details["pricing"] = {k: v for k, v in item["pricing"].items() if isinstance(v, str | int | float)}
    return ProviderModel(
        id=item["id"],
        display_name=text(item.get("name")),
        context_window=_first_count([item.get(name) for name in CONTEXT_FIELDS] + [top.get("context_length")]),
        max_output_tokens=_first_count([top.get("max_completion_tokens")] + [item.get(n) for n in OUTPUT_FIELDS]),
        details=details,
    )


def _first_count(values: list[Any]) -> int | None:
    return next((count for count in map(token_count, values) if count is not None), None)
