"""Anthropic's ``GET /v1/models``, paged: ``{"data": [...], "has_more", "first_id",
"last_id"}``; the next page is asked with ``after_id`` = the last page's ``last_id``,
``limit`` 1000 (the API's most). Each ``ModelInfo`` carries ``id``, ``display_name``,
``created_at`` and, where Anthropic lists them, ``max_input_tokens`` (the context window)
and ``max_tokens`` (the output limit), ``lifecycle`` and ``deprecated_at``."""

from typing import Any

import aiohttp

from adapters.providers.listed_models import MAX_PAGES, bad_listing, get_json, items_of, text, token_count
from application.model_discovery import ProviderModel
from application.routing import Route

PAGE_LIMIT = "1000"


async def list_anthropic_models(
    session: aiohttp.ClientSession, route: Route, url: str, headers: dict[str, str]
) -> list[ProviderModel]:
    models: list[ProviderModel] = []
    params = {"limit": PAGE_LIMIT}
    seen: set[str] = set()
    for _ in range(MAX_PAGES):
        document = await get_json(session, route, url, headers=headers, params=params)
        models.extend(_model(item) for item in items_of(route, document, "data") if text(item.get("id")))
        if document.get("has_more") is not True:
            return models
        last = text(document.get("last_id"))
        if last is None or last in seen:
            raise bad_listing(route, "a page with has_more but no new last_id")
        seen.add(last)
        params = {"limit": PAGE_LIMIT, "after_id": last}
    raise bad_listing(route, f"more than {MAX_PAGES} pages")


def _model(item: dict[str, Any]) -> ProviderModel:
    details = {name: item[name] for name in ("created_at", "lifecycle", "deprecated_at") if item.get(name) is not None}
    return ProviderModel(
        id=item["id"],
        display_name=text(item.get("display_name")),
        context_window=token_count(item.get("max_input_tokens")),
        max_output_tokens=token_count(item.get("max_tokens")),
        details=details,
    )
