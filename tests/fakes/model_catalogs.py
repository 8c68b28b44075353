"""Fake model lists: real HTTP servers answering each provider's own "list models" call in
its wire format, paging included, for model discovery (application/model_discovery.py).

* :class:`FakeOpenAIModelList` — ``GET /v1/models`` (``Authorization: Bearer``):
  ``{"object": "list", "data": [...]}``, one page, whatever fields the model documents hold
  (OpenRouter's ``context_length``, ``pricing``, ``top_provider`` among them). A wrong key
  is a 401 whose message echoes the key masked, as OpenAI's does.
* :class:`FakeAnthropicModelList` — ``GET /v1/models`` (``x-api-key``, ``anthropic-version``):
  pages of at most ``min(limit, page_size)`` models (``limit`` 1 to 1000, default 20),
  ``after_id`` continues after that id; ``{"data", "has_more", "first_id", "last_id"}``.
* :class:`FakeGeminiModelList` — ``GET /v1beta/models`` (``x-goog-api-key``): pages of at
  most ``min(pageSize, page_size)`` (``pageSize`` default 50, at most 1000); an opaque
  ``nextPageToken`` continues; a wrong key is Google's 400 ``API_KEY_INVALID``; an unknown
  page token a 400 ``INVALID_ARGUMENT``.
* :class:`FakeOllamaTags` — ``GET /api/tags``: ``{"models": [...]}``, no authentication.
* :class:`FakeBedrockControlPlane` — ``GET /foundation-models`` (``ListFoundationModels``),
  SigV4 checked exactly as :class:`FakeBedrockUpstream` checks it; ``{"modelSummaries": [...]}``.

Every request is recorded (query included). :class:`ListingScript` behaviours are consumed
one per listing request: an error status in the provider's error shape, or a delay.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web

from .bedrock_upstream import BedrockRequest, FakeBedrockUpstream, Reject
from .fake_server import RECORD_KEY, FakeServer, Script, json_response
from .gemini_upstream import google_error

__all__ = [
    "FakeAnthropicModelList",
    "FakeBedrockControlPlane",
    "FakeGeminiModelList",
    "FakeOllamaTags",
    "FakeOpenAIModelList",
    "ListingScript",
    "anthropic_model",
    "bedrock_summary",
    "gemini_model",
    "ollama_tag",
    "openai_model",
]


@dataclass(frozen=True)
class ListingScript(Script):
    """How the fake answers one listing request. Unset fields mean "normal"."""

    status: int | None = None  # answer this status, in the provider's error shape
    message: str = "The server had an error while processing your request."
    retry_after: str | None = None
    delay_seconds: float = 0.0


# ---------------------------------------------------------------------- model documents


def openai_model(model_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 1_700_000_000, "owned_by": "system", **extra}


def anthropic_model(
    model_id: str, *, max_input_tokens: int | None = None, max_tokens: int | None = None
) -> dict[str, Any]:
    model: dict[str, Any] = {
        "type": "model",
        "id": model_id,
        "display_name": model_id.replace("-", " ").title(),
        "created_at": "2025-05-14T00:00:00Z",
    }
    if max_input_tokens is not None:
        model.update(max_input_tokens=max_input_tokens, max_tokens=max_tokens, lifecycle="active", deprecated_at=None)
    return model


def gemini_model(name: str, methods: tuple[str, ...], *, input_limit: int, output_limit: int) -> dict[str, Any]:
    return {
        "name": f"models/{name}",
        "version": "001",
        "displayName": name.replace("-", " ").title(),
        "description": f"The fake's {name}",
        "inputTokenLimit": input_limit,
        "outputTokenLimit": output_limit,
        "supportedGenerationMethods": list(methods),
        "temperature": 1,
        "topP": 0.95,
        "topK": 64,
    }


def ollama_tag(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": "2025-05-01T12:00:00.000000000Z",
        "size": 2_019_393_189,
        "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "3.2B",
            "quantization_level": "Q4_K_M",
        },
    }


def bedrock_summary(model_id: str, provider: str, *, inference: tuple[str, ...] = ("ON_DEMAND",)) -> dict[str, Any]:
    return {
        "modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{model_id}",
        "modelId": model_id,
        "modelName": model_id.split(".", 1)[-1],
        "providerName": provider,
        "inputModalities": ["TEXT"],
        "outputModalities": ["TEXT"],
        "responseStreamingSupported": True,
        "customizationsSupported": [],
        "inferenceTypesSupported": list(inference),
        "modelLifecycle": {"status": "ACTIVE"},
    }


# ---------------------------------------------------------------------- servers


class _ListingFake(FakeServer[ListingScript]):
    script_type = ListingScript

    def __init__(self, models: list[dict[str, Any]], *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self.models = list(models)

    async def _scripted(self) -> ListingScript:
        script = self._next_script()
        if script.delay_seconds:
            await asyncio.sleep(script.delay_seconds)
        return script

    @staticmethod
    def _retry_after(script: ListingScript) -> dict[str, str] | None:
        return {"retry-after": script.retry_after} if script.retry_after else None


class FakeOpenAIModelList(_ListingFake):
    label = "OpenAI models"
    base_path = "/v1"

    def __init__(self, models: list[dict[str, Any]], *, api_key: str, **kwargs: Any) -> None:
        super().__init__(models, **kwargs)
        self.api_key = api_key

    def build_routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/models", self._list), web.route("*", "/{tail:.*}", self._not_found)]

    @staticmethod
    def _error(status: int, message: str, error_type: str, code: str | None, headers: Any = None) -> web.Response:
        body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
        return json_response(body, status, headers)

    async def _list(self, request: web.Request) -> web.Response:
        script = await self._scripted()
        if script.status is not None:
            return self._error(script.status, script.message, "server_error", None, self._retry_after(script))
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or key != self.api_key:
            shown = f"{key[:3]}{'*' * 8}{key[-4:]}" if len(key) > 10 else key
            message = f"Incorrect API key provided: {shown}. You can find your API key at https://example.invalid."
            return self._error(401, message, "invalid_request_error", "invalid_api_key")
        return json_response({"object": "list", "data": self.models})

    async def _not_found(self, request: web.Request) -> web.Response:
        return self._error(404, f"Invalid URL ({request.method} {request.path})", "invalid_request_error", None)


class FakeAnthropicModelList(_ListingFake):
    label = "Anthropic models"

    def __init__(self, models: list[dict[str, Any]], *, api_key: str, page_size: int = 20, **kwargs: Any) -> None:
        super().__init__(models, **kwargs)
        self.api_key = api_key
        self.page_size = page_size

    def build_routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/models", self._list), web.route("*", "/{tail:.*}", self._not_found)]

    @staticmethod
    def _error(status: int, error_type: str, message: str, headers: Any = None) -> web.Response:
        body = {"type": "error", "error": {"type": error_type, "message": message}, "request_id": "req_fake_list"}
        return json_response(body, status, headers)

    async def _list(self, request: web.Request) -> web.Response:
        script = await self._scripted()
        if script.status is not None:
            return self._error(script.status, "api_error", script.message, self._retry_after(script))
        if request.headers.get("x-api-key") != self.api_key:
            return self._error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return self._error(400, "invalid_request_error", "anthropic-version: header is required")
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            return self._error(400, "invalid_request_error", "limit: Input should be between 1 and 1000")
        ids = [model["id"] for model in self.models]
        after = request.query.get("after_id")
        if after is not None and after not in ids:
            return self._error(400, "invalid_request_error", f"after_id: unknown model {after}")
        start = ids.index(after) + 1 if after is not None else 0
        page = self.models[start : start + min(limit, self.page_size)]
        return json_response(
            {
                "data": page,
                "has_more": start + len(page) < len(self.models),
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
            }
        )

    async def _not_found(self, request: web.Request) -> web.Response:
        return self._error(404, "not_found_error", "Not Found")


class FakeGeminiModelList(_ListingFake):
    label = "Gemini models"
    base_path = "/v1beta"

    def __init__(self, models: list[dict[str, Any]], *, api_key: str, page_size: int = 50, **kwargs: Any) -> None:
        super().__init__(models, **kwargs)
        self.api_key = api_key
        self.page_size = page_size

    def build_routes(self) -> list[web.RouteDef]:
        return [web.get("/v1beta/models", self._list), web.route("*", "/{tail:.*}", self._not_found)]

    async def _list(self, request: web.Request) -> web.Response:
        script = await self._scripted()
        if script.status is not None:
            return json_response(google_error(script.status, script.message), script.status, self._retry_after(script))
        if request.headers.get("x-goog-api-key") != self.api_key:
            message = "API key not valid. Please pass a valid API key."
            reason = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
            return json_response(google_error(400, message, "INVALID_ARGUMENT", [reason]), 400)
        size = min(int(request.query.get("pageSize") or 50), 1000, self.page_size)
        token = request.query.get("pageToken")
        try:
            start = int(base64.urlsafe_b64decode(token.encode()).decode().removeprefix("offset:")) if token else 0
        except ValueError:
            return json_response(google_error(400, "Invalid page token.", "INVALID_ARGUMENT"), 400)
        page = self.models[start : start + size]
        document: dict[str, Any] = {"models": page}
        if start + size < len(self.models):
            document["nextPageToken"] = base64.urlsafe_b64encode(f"offset:{start + size}".encode()).decode()
        return json_response(document)

    async def _not_found(self, request: web.Request) -> web.Response:
        return json_response(google_error(404, f"Method not found: {request.method} {request.path}"), 404)


class FakeOllamaTags(_ListingFake):
    label = "Ollama tags"

    def build_routes(self) -> list[web.RouteDef]:
        return [web.get("/api/tags", self._tags), web.route("*", "/{tail:.*}", self._not_found)]

    async def _tags(self, request: web.Request) -> web.Response:
        script = await self._scripted()
        if script.status is not None:
            return json_response({"error": script.message}, script.status)
        return json_response({"models": self.models})

    async def _not_found(self, request: web.Request) -> web.Response:
        return json_response({"error": "404 page not found"}, 404)


class FakeBedrockControlPlane(FakeBedrockUpstream):
    """Bedrock's control plane: ``GET /foundation-models``, every request SigV4-checked.
    ``foundation_models`` may be changed while running."""

    label = "Bedrock control plane"

    def __init__(self, foundation_models: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.foundation_models = list(foundation_models)

    def build_routes(self) -> list[web.RouteDef]:
        return [web.route("*", "/{tail:.*}", self._control)]

    async def _control(self, request: web.Request) -> web.StreamResponse:
        record = cast(BedrockRequest, request[RECORD_KEY])
        try:
            self._verify_signature(request, record)
        except Reject as rej:
            record.signature_valid, record.auth_error = False, rej.error_type
            return self._error(rej.status, rej.error_type, rej.message)
        record.signature_valid = True
        if request.method != "GET" or record.raw_path != "/foundation-models":
            return self._error(404, "UnknownOperationException", "")
        script = self._next_script()
        if script.error_status is not None:
            return self._error(script.error_status, script.error_type, script.error_message)
        return json_response({"modelSummaries": self.foundation_models})
