"""Gemini's ``GET /v1beta/models``, paged: ``{"models": [...], "nextPageToken"}``; the next
page is asked with ``pageToken``, ``pageSize`` 1000 (the API's most). Only models whose
``supportedGenerationMethods`` include ``generateContent`` or ``embedContent`` are listed
(the others cannot serve a chat or an embedding through Tallyhub), by their id without
the ``models/`` prefix, with ``inputTokenLimit`` as the context window and
``outputTokenLimit`` as the output limit."""

from typing import Any

import aiohttp

from adapters.providers.listed_models import MAX_PAGES, bad_listing, get_json, items_of, text, token_count
from application.model_discovery import ProviderModel
from application.routing import Route

PAGE_SIZE = "1000"
SERVED_METHODS = ("generateContent", "embedContent")


async def list_gemini_models(
    session: aiohttp.ClientSession, route: Route, url: str, headers: dict[str, str]
) -> list[ProviderModel]:
    models: list[ProviderModel] = []
    params = {"pageSize": PAGE_SIZE}
    seen: set[str] = set()
    for _ in range(MAX_PAGES):
        document = await get_json(session, route, url, headers=headers, params=params, refused=key_refused)
        for item in items_of(route, document, "models"):
            methods = item.get("supportedGenerationMethods")
            if text(item.get("name")) and isinstance(methods, list) and any(m in methods for m in SERVED_METHODS):
                models.append(_model(item, methods))
        token = text(document.get("nextPageToken"))
        if token is None:
            return models
        if token in seen:
            raise bad_listing(route, "a nextPageToken it had sent before")
        seen.add(token)
        params = {"pageSize": PAGE_SIZE, "pageToken": token}
    raise bad_listing(route, f"more than {MAX_PAGES} pages")


def key_refused(status: int, raw: bytes) -> bool:
    """Google answers a key it does not know with a 400 whose reason is ``API_KEY_INVALID``."""
    return status == 400 and b'"API_KEY_' in raw


def _model(item: dict[str, Any], methods: list[Any]) -> ProviderModel:
    details: dict[str, Any] = {"methods": [m for m in methods if isinstance(m, str)]}
    if text(item.get("version")):
        details["version"] = item["version"]
    return ProviderModel(
        id=item["name"].removeprefix("models/"),
        display_name=text(item.get("displayName")),
        context_window=token_count(item.get("inputTokenLimit")),
        max_output_tokens=token_count(item.get("outputTokenLimit")),
        details=details,
    )
