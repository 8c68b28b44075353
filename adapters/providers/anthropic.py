"""The Anthropic Messages API (``POST /v1/messages``), for kind ``anthropic`` providers.

The gateway speaks OpenAI's chat format; this adapter translates the request
(adapters/providers/anthropic_request.py) and the answer, plain or streamed
(adapters/providers/anthropic_response.py), both ways. ``probe`` checks a credential
with ``GET /v1/models``, which costs no tokens.

Invariants:
- a request the Messages API cannot express is refused with ``InvalidRequest``
  before any network call;
- failures before the first byte become ``UpstreamError`` mapped exactly as for
  OpenAI-compatible providers, 529 (overloaded) included;
  the provider's message is passed on only for errors in the caller's request, and
  never contains the credential;
- a stream ends with ``[DONE]`` only after the provider's ``message_stop``; an
  ``error`` event or a stream cut short raises one of ``READ_FAILURES``.
"""

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from adapters.providers.anthropic_models import list_anthropic_models
from adapters.providers.anthropic_request import messages_request
from adapters.providers.anthropic_response import StreamTranslator, chat_completion
from adapters.providers.base import DONE, ProviderBase, ResponseExchange, UpstreamTimeouts, read_answer, upstream_json
from adapters.providers.errors import post, probe_with_get
from adapters.providers.openai_compatible import sse_events, upstream_error
from application.model_discovery import ProviderModel
from application.routing import Route
from domain.errors import MalformedUpstreamAnswer

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
# What POST /v1/messages/count_tokens takes besides the model (it refuses max_tokens, stream, ...).
COUNT_TOKENS_FIELDS = ("messages", "system", "tools", "tool_choice", "thinking", "cache_control", "output_config")


def api_url(base_url: str | None, path: str) -> str:
    """``{base}/v1{path}``; a base URL that already ends in ``/v1`` is accepted too."""
    base = (base_url or DEFAULT_BASE_URL).rstrip("/")
    return base + ("" if base.endswith("/v1") else "/v1") + path


def _headers(route: Route) -> dict[str, str]:
    headers = {"content-type": "application/json", "anthropic-version": API_VERSION}
    if route.secret:
        headers["x-api-key"] = route.secret
    return headers


class AnthropicProvider(ProviderBase):
    def __init__(self, session: aiohttp.ClientSession, *, timeout_seconds: float) -> None:
        self.session = session
        self.timeouts = UpstreamTimeouts(timeout_seconds)  # per provider: the route carries its policy

    async def start_chat(self, route: Route, body: dict[str, Any]) -> "AnthropicExchange":
        """Translate and send the request; return the open 2xx exchange or raise UpstreamError."""
        payload = orjson.dumps(messages_request(body, route.upstream_model))
        response = await post(
            self.session,
            route,
            api_url(route.base_url, "/messages"),
            data=payload,
            headers=_headers(route),
            timeout=self.timeouts.for_route(route),
        )
        if response.status >= 300:
            raise await upstream_error(route, response)
        return AnthropicExchange(response)

    async def probe(self, route: Route) -> bool | None:
        """Is the credential accepted? ``GET /v1/models`` costs no tokens. None: could not tell."""
        return await probe_with_get(self.session, api_url(route.base_url, "/models"), _headers(route))

    async def list_models(self, route: Route) -> list[ProviderModel]:
        """``GET /v1/models``, every page (adapters/providers/anthropic_models.py)."""
        return await list_anthropic_models(self.session, route, api_url(route.base_url, "/models"), _headers(route))

    async def count_tokens(self, route: Route, body: dict[str, Any]) -> int:
        """``POST /v1/messages/count_tokens`` for the caller's Messages body (the fields that
        endpoint takes, the model renamed): the provider's count of its input tokens."""
        payload: dict[str, Any] = {"model": route.upstream_model}
        payload.update({name: body[name] for name in COUNT_TOKENS_FIELDS if body.get(name) is not None})
        response = await post(
            self.session,
            route,
            api_url(route.base_url, "/messages/count_tokens"),
            data=orjson.dumps(payload),
            headers=_headers(route),
            timeout=self.timeouts.for_route(route),
        )
        if response.status >= 300:
            raise await upstream_error(route, response)
        tokens = upstream_json(await read_answer(response))
        tokens = tokens.get("input_tokens") if isinstance(tokens, dict) else None
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
            raise MalformedUpstreamAnswer("the provider's token count has no input_tokens")
        return tokens


class AnthropicExchange(ResponseExchange):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.created = int(time.time())

    async def read_completion(self) -> bytes:
        return orjson.dumps(chat_completion(upstream_json(await read_answer(self.response)), self.created))

    def stream_data(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        translator = StreamTranslator(self.created)
        async for data in sse_events(self.response):
            for chunk in translator.take(upstream_json(data)):
                yield orjson.dumps(chunk)
            if translator.finished:
                yield DONE
                return
        raise MalformedUpstreamAnswer("the provider's stream ended before message_stop")
