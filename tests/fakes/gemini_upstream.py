"""A fake Google Gemini upstream: a real HTTP server speaking the Gemini API's wire format.

It mimics ``https://generativelanguage.googleapis.com/v1beta`` closely enough for
Tallyhub's Gemini adapter (camelCase JSON, as the adapter sends it):

* ``POST /v1beta/models/{model}:generateContent`` — a ``GenerateContentResponse``.
* ``POST /v1beta/models/{model}:streamGenerateContent?alt=sse`` — ``data: {fragment}``
  events separated by ``\\r\\n\\r\\n``; one fragment per reply token, every fragment
  carrying ``usageMetadata`` (the last one complete) and the last one the
  ``finishReason``. There is no ``[DONE]``: the stream simply ends. Without
  ``alt=sse`` the fragments come as one JSON array, as Google does.
* ``GET /v1beta/models`` — the model list (``pageSize`` honoured).
* ``POST /v1beta/models/{model}:batchEmbedContents`` and ``:embedContent`` —
  deterministic vectors (:func:`embedding_vector`), no token counts (Google sends none).
* Errors use Google's envelope ``{"error": {"code", "message", "status", "details"?}}``.
  Unknown request fields are refused with Google's "Unknown name" 400, so a translation
  bug shows up as a 400, not as a silently ignored field.

Authentication, as Google answers (checked against public reports of real responses):
no key at all → **403** ``PERMISSION_DENIED`` ("Method doesn't allow unregistered
callers…"); a wrong key → **400** ``INVALID_ARGUMENT`` "API key not valid. Please pass
a valid API key." with a ``google.rpc.ErrorInfo`` detail of reason ``API_KEY_INVALID``.
The key is accepted from the ``x-goog-api-key`` header or the ``key`` query parameter.

Behaviour:

* the answer is ``reply_text`` (or a scripted one); after a ``functionResponse`` turn it
  is ``"Tool results: name={json}; …"``; with ``responseMimeType: application/json`` it
  is a JSON document (placeholder values from ``responseSchema``, else ``{"text": …}``);
* when ``tools`` declare functions, the mode is not ``NONE`` and the last user turn holds
  no ``functionResponse``, the answer is a ``functionCall`` of the first allowed function
  with placeholder arguments (:func:`placeholder_args`) and a ``thoughtSignature``
  (``require_thought_signatures=True`` then refuses a history whose model function calls
  lack one, as Gemini 3 does);
* any text part containing ``BLOCKME`` → ``promptFeedback.blockReason = SAFETY`` and no
  candidates (a 200, as Google answers);
* ``candidateCount`` n → n identical candidates; ``stopSequences`` cut the reply;
  ``maxOutputTokens`` truncates it (``finishReason: MAX_TOKENS``).

Token rules (deterministic, documented so tests can predict them):

* ``promptTokenCount`` = Σ ceil(len(text) / 4) over every text part (system instruction
  included) + Σ ceil(len(JSON) / 4) over every functionCall ``args`` / functionResponse
  ``response`` + 258 per ``inlineData`` part (Google's count for a small image);
* reply tokens are :func:`reply_tokens` (whitespace + word runs: "Hello from fake Gemini"
  is 4 tokens); a functionCall counts ceil(len(args JSON) / 4);
  ``candidatesTokenCount`` sums over the candidates; thoughts count separately in
  ``thoughtsTokenCount``; ``totalTokenCount`` = prompt + candidates + thoughts.

Scripts (:class:`GeminiScript`, FIFO, one per model request) inject errors, raw bodies,
dropped connections, mid-stream error objects, streams without a finishReason, other
finish reasons, thoughts and usage numbers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from .fake_server import RECORD_KEY, SEQ_KEY, FakeServer, RecordedRequest, Script, drop_connection, json_response
from .openai_wire import reply_tokens

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_MODELS",
    "DEFAULT_REPLY_TEXT",
    "FakeGeminiUpstream",
    "GeminiScript",
    "RecordedRequest",
    "embedding_vector",
    "placeholder_args",
    "prompt_tokens",
    "reply_tokens",
]

DEFAULT_API_KEY = "AIzaSy-fake-gemini-key-0001"
DEFAULT_REPLY_TEXT = "Hello from fake Gemini"
DEFAULT_MODELS = ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-3-pro-preview")
DEFAULT_EMBEDDING_MODELS = ("gemini-embedding-001", "text-embedding-004")
DEFAULT_EMBEDDING_DIMENSIONS = 8
IMAGE_TOKENS = 258
FAKE_SIGNATURE_PREFIX = "ZmFrZS1zaWduYXR1cmU"  # base64 of "fake-signature", then a sequence number
SKIP_SIGNATURES = ("skip_thought_signature_validator", "context_engineering_is_the_way_to_go")

GRPC_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,63}$")
_TOP_FIELDS = {
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "safetySettings",
    "generationConfig",
    "cachedContent",
    "model",
}
_PART_DATA = {
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
}
_PART_META = {"thought", "thoughtSignature", "videoMetadata", "mediaResolution"}
_GENERATION_FIELDS = {
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "candidateCount",
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseLogprobs",
    "logprobs",
    "thinkingConfig",
    "responseModalities",
    "mediaResolution",
    "speechConfig",
    "enableEnhancedCivicAnswers",
}
_SCHEMA_FIELDS = {
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
}
_SCHEMA_TYPES = {"TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}
_DECLARATION_FIELDS = {
    "name",
    "description",
    "parameters",
    "parametersJsonSchema",
    "response",
    "responseJsonSchema",
    "behavior",
}


# --------------------------------------------------------------------------- wire rules (pure)


def _ceil4(text: str) -> int:
    return math.ceil(len(text) / 4)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def prompt_tokens(request: dict[str, Any]) -> int:
    """The promptTokenCount rule of the module docstring."""
    parts = list((request.get("systemInstruction") or {}).get("parts") or [])
    for content in request.get("contents") or ():
        parts.extend(content.get("parts") or ())
    total = 0
    for part in parts:
        if isinstance(part.get("text"), str):
            total += _ceil4(part["text"])
        elif "functionCall" in part:
            total += _ceil4(_json(part["functionCall"].get("args") or {}))
        elif "functionResponse" in part:
            total += _ceil4(_json(part["functionResponse"].get("response") or {}))
        elif "inlineData" in part:
            total += IMAGE_TOKENS
    return total


def placeholder_args(schema: Any) -> Any:
    """A value that fits a Gemini schema: required properties only (all when none are required)."""
    if not isinstance(schema, dict):
        return {}
    kind = str(schema.get("type") or ("OBJECT" if "properties" in schema else "STRING")).upper()
    if schema.get("enum"):
        return schema["enum"][0]
    if kind == "OBJECT":
        properties = schema.get("properties") or {}
        names = schema.get("required") or list(properties)
        return {name: placeholder_args(properties.get(name)) for name in names}
    if kind == "ARRAY":
        return [placeholder_args(schema.get("items"))]
    return {"STRING": "example", "INTEGER": 1, "NUMBER": 1.5, "BOOLEAN": True, "NULL": None}.get(kind, "example")


def embedding_vector(text: str, dimensions: int = DEFAULT_EMBEDDING_DIMENSIONS) -> list[float]:
    """Deterministic values in [-1, 1] from SHA-256 of the text."""
    values: list[float] = []
    block = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(f"{block}:{text}".encode()).digest()
        values.extend(round(byte / 127.5 - 1.0, 6) for byte in digest)
        block += 1
    return values[:dimensions]


def google_error(
    code: int, message: str, status: str | None = None, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status or GRPC_STATUS.get(code, "UNKNOWN")}
    if details:
        error["details"] = details
    return {"error": error}


# --------------------------------------------------------------------------- scripts


@dataclass(frozen=True)
class GeminiScript(Script):
    """How the fake answers one model request. Unset fields mean "normal"; combine with ``|``."""

    delay_seconds: float = 0.0
    error_status: int | None = None  # answer with Google's error envelope (before auth)
    error_message: str = (
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting"
    )
    error_grpc_status: str | None = None  # default from the HTTP status
    error_details: tuple[dict[str, Any], ...] = ()
    retry_after: str | None = None  # a Retry-After header (Google normally sends none)
    raw_status: int | None = None
    raw_body: str = ""
    raw_content_type: str = "text/html"
    break_after: int | None = None  # streams: k fragments, then drop the TCP connection; plain: drop at once
    error_after: int | None = None  # streams: k fragments, then a data: {"error": …} event, then EOF
    stream_error_code: int = 500
    omit_finish: bool = False  # streams end cleanly but no fragment carries a finishReason
    finish_reason: str | None = None  # replace STOP / MAX_TOKENS
    thoughts: str | None = None  # a part {"text": thoughts, "thought": true} before the answer
    usage_overrides: dict[str, int] = field(default_factory=dict)  # usageMetadata fields to set
    reply_text: str | None = None

    @classmethod
    def error(
        cls,
        status: int,
        message: str | None = None,
        *,
        grpc_status: str | None = None,
        retry_delay: str | None = None,
        retry_after: str | None = None,
    ) -> GeminiScript:
        details: tuple[dict[str, Any], ...] = ()
        if retry_delay is not None:
            details = ({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay},)
        default = cls.error_message if status >= 500 else "Request failed"
        if status == 429 and message is None:
            default = (
                "You exceeded your current quota, please check your plan and billing details. For more "
                "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
            )
        return cls(
            error_status=status,
            error_message=message or default,
            error_grpc_status=grpc_status,
            error_details=details,
            retry_after=retry_after,
        )

    @classmethod
    def raw(cls, status: int, body: str, content_type: str = "text/html") -> GeminiScript:
        return cls(raw_status=status, raw_body=body, raw_content_type=content_type)

    @classmethod
    def delay(cls, seconds: float) -> GeminiScript:
        return cls(delay_seconds=seconds)

    @classmethod
    def break_stream_after(cls, fragments: int) -> GeminiScript:
        return cls(break_after=fragments)

    @classmethod
    def error_in_stream_after(cls, fragments: int, code: int = 500) -> GeminiScript:
        return cls(error_after=fragments, stream_error_code=code)

    @classmethod
    def no_finish(cls) -> GeminiScript:
        return cls(omit_finish=True)

    @classmethod
    def finish(cls, reason: str) -> GeminiScript:
        return cls(finish_reason=reason)

    @classmethod
    def thinking(cls, text: str) -> GeminiScript:
        return cls(thoughts=text)

    @classmethod
    def usage(cls, **counts: int) -> GeminiScript:
        """e.g. ``usage(cachedContentTokenCount=3, thoughtsTokenCount=7)``."""
        return cls(usage_overrides=dict(counts))

    @classmethod
    def reply(cls, text: str) -> GeminiScript:
        return cls(reply_text=text)


class Reject(Exception):
    def __init__(
        self, status: int, message: str, *, grpc_status: str | None = None, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.grpc_status, self.details = status, message, grpc_status, details


# --------------------------------------------------------------------------- request validation


def _unknown(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in obj:
        if key not in allowed:
            at = f" at '{where}'" if where else ""
            raise Reject(400, f'Invalid JSON payload received. Unknown name "{key}"{at}: Cannot find field.')


def _validate_request(body: Any, require_signatures: bool) -> None:
    if not isinstance(body, dict):
        raise Reject(400, "Invalid JSON payload received. Expected an object.")
    _unknown(body, _TOP_FIELDS, "")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise Reject(400, "* GenerateContentRequest.contents: contents is not specified\n")
    for i, content in enumerate(contents):
        _validate_content(content, f"contents[{i}]")
        if content.get("role", "user") not in ("user", "model"):
            raise Reject(400, "Please use a valid role: user, model.")
    _validate_turns(contents, require_signatures)
    system = body.get("systemInstruction")
    if system is not None:
        _validate_content(system, "system_instruction")
    names = _validate_tools(body.get("tools") or [])
    _validate_tool_config(body.get("toolConfig"), names)
    config = body.get("generationConfig") or {}
    _unknown(config, _GENERATION_FIELDS, "generation_config")
    if len(config.get("stopSequences") or ()) > 5:
        raise Reject(400, "* GenerateContentRequest.generation_config.stop_sequences: at most 5 stop sequences\n")
    if not 1 <= int(config.get("candidateCount", 1)) <= 8:
        raise Reject(400, "* GenerateContentRequest.generation_config.candidate_count: must be in [1, 8]\n")
    if "responseSchema" in config:
        _validate_schema(config["responseSchema"], "generation_config.response_schema")


def _validate_content(content: Any, where: str) -> None:
    if not isinstance(content, dict):
        raise Reject(400, f"Invalid value at '{where}': expected an object")
    _unknown(content, {"role", "parts"}, where)
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise Reject(400, f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.\n")
    for j, part in enumerate(parts):
        at = f"{where}.parts[{j}]"
        _unknown(part, _PART_DATA | _PART_META, at)
        if len([key for key in part if key in _PART_DATA]) != 1:
            raise Reject(
                400,
                f"* GenerateContentRequest.{at}.data: required oneof field 'data' must have one initialized field\n",
            )
        if "inlineData" in part:
            inline = part["inlineData"]
            _unknown(inline, {"mimeType", "data"}, f"{at}.inline_data")
            if not inline.get("mimeType"):
                raise Reject(400, f"* GenerateContentRequest.{at}.inline_data.mime_type: mime_type must be set\n")
            _base64(inline.get("data"), f"{at}.inline_data.data")
        if "thoughtSignature" in part:
            _base64(part["thoughtSignature"], f"{at}.thought_signature")
        if "functionCall" in part and not _FUNCTION_NAME.match(str(part["functionCall"].get("name"))):
            raise Reject(400, f"* GenerateContentRequest.{at}.function_call.name: invalid function name\n")
        if "functionResponse" in part:
            response = part["functionResponse"]
            if not isinstance(response.get("response"), dict) or not response.get("name"):
                raise Reject(
                    400,
                    f"* GenerateContentRequest.{at}.function_response: name and response (an object) are required\n",
                )


def _base64(data: Any, where: str) -> None:
    try:
        text = str(data)
        base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise Reject(
            400, f"Invalid value at '{where}' (TYPE_BYTES), Base64 decoding failed for \"{str(data)[:20]}\""
        ) from None


def _validate_turns(contents: list[dict[str, Any]], require_signatures: bool) -> None:
    for i, content in enumerate(contents):
        calls = [p for p in content["parts"] if "functionCall" in p]
        if content.get("role") == "model" and calls and require_signatures and not calls[0].get("thoughtSignature"):
            name = calls[0]["functionCall"]["name"]
            raise Reject(
                400,
                f"Function call is missing a thought_signature in functionCall parts. This is required "
                f"for tools to work correctly. Additional data, function call `default_api:{name}` , "
                f"position {i + 1}. Please refer to "
                "https://ai.google.dev/gemini-api/docs/thought-signatures for more details.",
            )
        responses = [p for p in content["parts"] if "functionResponse" in p]
        if responses:
            previous = contents[i - 1] if i else {"parts": []}
            expected = [p for p in previous["parts"] if "functionCall" in p]
            if previous.get("role") != "model" or len(expected) != len(responses):
                raise Reject(
                    400,
                    "Please ensure that the number of function response parts is equal to the number "
                    "of function call parts of the function call turn.",
                )


def _validate_tools(tools: Any) -> list[str]:
    names: list[str] = []
    for i, tool in enumerate(tools):
        _unknown(tool, {"functionDeclarations", "googleSearch", "codeExecution", "urlContext"}, f"tools[{i}]")
        for j, declaration in enumerate(tool.get("functionDeclarations") or ()):
            at = f"tools[{i}].function_declarations[{j}]"
            _unknown(declaration, _DECLARATION_FIELDS, at)
            if not _FUNCTION_NAME.match(str(declaration.get("name"))):
                raise Reject(
                    400,
                    f"* GenerateContentRequest.{at}.name: Invalid function name. Must start with a "
                    "letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), underscores (_), "
                    "dots (.), colons (:) or dashes (-), with a maximum length of 64.\n",
                )
            if "parameters" in declaration:
                _validate_schema(declaration["parameters"], f"{at}.parameters")
            names.append(declaration["name"])
    return names


def _validate_schema(schema: Any, where: str) -> None:
    if not isinstance(schema, dict):
        raise Reject(400, f"Invalid value at '{where}': expected an object")
    _unknown(schema, _SCHEMA_FIELDS, where)
    if "type" in schema and str(schema["type"]).upper() not in _SCHEMA_TYPES:
        raise Reject(
            400,
            f"Invalid value at '{where}.type' (type.googleapis.com/google.ai.generativelanguage."
            f'v1beta.Type), "{schema["type"]}"',
        )
    if str(schema.get("type", "")).upper() == "OBJECT" and "properties" in schema and not schema["properties"]:
        raise Reject(400, f"* GenerateContentRequest.{where}.properties: should be non-empty for OBJECT type\n")
    for name, sub in (schema.get("properties") or {}).items():
        _validate_schema(sub, f"{where}.properties[{name}].value")
    if "items" in schema:
        _validate_schema(schema["items"], f"{where}.items")
    for k, sub in enumerate(schema.get("anyOf") or ()):
        _validate_schema(sub, f"{where}.any_of[{k}]")


def _validate_tool_config(config: Any, names: list[str]) -> None:
    if config is None:
        return
    _unknown(config, {"functionCallingConfig", "retrievalConfig"}, "tool_config")
    calling = config.get("functionCallingConfig") or {}
    _unknown(calling, {"mode", "allowedFunctionNames"}, "tool_config.function_calling_config")
    if calling.get("mode", "AUTO") not in ("AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED"):
        raise Reject(400, f"Invalid value at 'tool_config.function_calling_config.mode', \"{calling.get('mode')}\"")
    allowed = calling.get("allowedFunctionNames")
    if allowed and calling.get("mode") not in ("ANY", "VALIDATED"):
        raise Reject(
            400,
            "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: "
            "allowed_function_names can only be set when mode is ANY or VALIDATED.\n",
        )
    for name in allowed or ():
        if name not in names:
            raise Reject(
                400,
                f"* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: "
                f"function {name} is not declared.\n",
            )


# --------------------------------------------------------------------------- answers


@dataclass
class _Answer:
    """What every candidate says: parts, finishReason and token counts."""

    parts: list[dict[str, Any]]
    thought: str | None
    finish: str
    tokens: int  # per candidate
    thought_tokens: int
    chunks: list[str]  # text per stream fragment (one functionCall fragment when calling)


class FakeGeminiUpstream(FakeServer[GeminiScript]):
    """Fake Gemini API on ``127.0.0.1`` (ephemeral port unless ``port`` is given)."""

    label = "Gemini"
    base_path = "/v1beta"
    script_type = GeminiScript

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        reply_text: str = DEFAULT_REPLY_TEXT,
        models: tuple[str, ...] = DEFAULT_MODELS,
        embedding_models: tuple[str, ...] = DEFAULT_EMBEDDING_MODELS,
        require_thought_signatures: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.api_key = api_key
        self.reply_text = reply_text
        self.models = tuple(models)
        self.embedding_models = tuple(embedding_models)
        self.require_thought_signatures = require_thought_signatures
        self._restore_on_reset("reply_text", "require_thought_signatures")

    def build_routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1beta/models", self._list_models),
            web.post("/v1beta/models/{target}", self._models_call),
            web.route("*", "/{tail:.*}", self._not_found),
        ]

    # ------------------------------------------------------------------ plumbing

    def _reject(self, rej: Reject) -> web.Response:
        return json_response(google_error(rej.status, rej.message, rej.grpc_status, rej.details), rej.status)

    def _check_key(self, request: web.Request) -> None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            raise Reject(
                403,
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API.",
            )
        if key != self.api_key:
            message = "API key not valid. Please pass a valid API key."
            raise Reject(
                400,
                message,
                details=[
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"},
                    },
                    {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": message},
                ],
            )

    async def _not_found(self, request: web.Request) -> web.Response:
        return json_response(google_error(404, f"Method not found: {request.method} {request.path}"), 404)

    # ------------------------------------------------------------------ routes

    async def _list_models(self, request: web.Request) -> web.Response:
        try:
            self._check_key(request)
        except Reject as rej:
            return self._reject(rej)
        size = int(request.query.get("pageSize") or 50)
        models = [
            {"name": f"models/{m}", "supportedGenerationMethods": ["generateContent", "countTokens"]}
            for m in self.models
        ] + [{"name": f"models/{m}", "supportedGenerationMethods": ["embedContent"]} for m in self.embedding_models]
        return json_response(
            {"models": models[:size], **({"nextPageToken": "fake-next"} if size < len(models) else {})}
        )

    async def _models_call(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["target"].rpartition(":")
        script = self._next_script()
        try:
            if script.delay_seconds:
                await asyncio.sleep(script.delay_seconds)
            if script.error_status is not None:
                headers = {"retry-after": script.retry_after} if script.retry_after else None
                return json_response(
                    google_error(
                        script.error_status, script.error_message, script.error_grpc_status, list(script.error_details)
                    ),
                    script.error_status,
                    headers,
                )
            if script.raw_status is not None:
                return web.Response(
                    status=script.raw_status, text=script.raw_body, content_type=script.raw_content_type
                )
            self._check_key(request)
            body = request[RECORD_KEY].json
            if method in ("batchEmbedContents", "embedContent"):
                self._check_model(model, self.embedding_models, method)
                return json_response(self._embeddings(model, method, body))
            self._check_model(model, self.models, method)
            if method not in ("generateContent", "streamGenerateContent"):
                raise Reject(404, f"Method not found: {method}")
            _validate_request(body, self.require_thought_signatures)
        except Reject as rej:
            return self._reject(rej)
        if method == "generateContent" and script.break_after is not None:
            return drop_connection(request)
        fragments = self._fragments(request[SEQ_KEY], model, body, script)
        if method == "generateContent":
            return json_response(_merged(fragments))
        if request.query.get("alt") != "sse":
            return json_response(fragments)
        return await self._write_sse(request, fragments, script)

    def _check_model(self, model: str, known: tuple[str, ...], method: str) -> None:
        if model not in known:
            raise Reject(
                404,
                f"models/{model} is not found for API version v1beta, or is not supported for "
                f"{method}. Call ListModels to see the list of available models and their "
                "supported methods.",
            )

    async def _write_sse(
        self, request: web.Request, fragments: list[dict[str, Any]], script: GeminiScript
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Content-Disposition": "attachment"}
        )
        await response.prepare(request)
        for sent, fragment in enumerate(fragments):
            if script.break_after is not None and sent >= script.break_after:
                return drop_connection(request)
            if script.error_after is not None and sent >= script.error_after:
                code = script.stream_error_code
                fragment = google_error(code, "An internal error has occurred." if code >= 500 else "Request failed")
                await response.write(b"data: " + orjson.dumps(fragment) + b"\r\n\r\n")
                break
            await response.write(b"data: " + orjson.dumps(fragment) + b"\r\n\r\n")
        await response.write_eof()
        return response

    # ------------------------------------------------------------------ generation

    def _fragments(self, seq: int, model: str, body: dict[str, Any], script: GeminiScript) -> list[dict[str, Any]]:
        """The stream fragments of the answer; a plain answer is their merge."""
        prompt = prompt_tokens(body)
        base = {"modelVersion": model, "responseId": f"fake-gemini-{seq:06d}"}
        if any("BLOCKME" in (part.get("text") or "") for content in body["contents"] for part in content["parts"]):
            return [
                {
                    "promptFeedback": {
                        "blockReason": "SAFETY",
                        "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}],
                    },
                    "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt},
                    **base,
                }
            ]
        config = body.get("generationConfig") or {}
        n = int(config.get("candidateCount", 1))
        answer = self._answer(seq, body, script)
        fragments = []
        if answer.thought:
            fragments.append({"parts": [{"text": answer.thought, "thought": True}], "tokens": 0})
        if answer.parts and "functionCall" in answer.parts[0]:
            fragments.append({"parts": answer.parts, "tokens": answer.tokens})
        else:
            produced = reply_tokens("".join(answer.chunks))
            fragments.extend({"parts": [{"text": token}], "tokens": 1} for token in produced)
            if not produced:
                fragments.append({"parts": [{"text": ""}], "tokens": 0})
        out, so_far = [], 0
        for k, fragment in enumerate(fragments):
            so_far += fragment["tokens"]
            last = k == len(fragments) - 1
            candidates = []
            for i in range(n):
                candidate: dict[str, Any] = {"content": {"parts": fragment["parts"], "role": "model"}, "index": i}
                if last and not script.omit_finish:
                    candidate["finishReason"] = answer.finish
                candidates.append(candidate)
            usage = {"promptTokenCount": prompt, "candidatesTokenCount": so_far * n}
            if last:
                usage["thoughtsTokenCount"] = answer.thought_tokens * n
                usage.update(script.usage_overrides)
            usage = {key: value for key, value in usage.items() if value or key == "promptTokenCount"}
            usage["totalTokenCount"] = (
                usage["promptTokenCount"]
                + usage.get("candidatesTokenCount", 0)
                + usage.get("thoughtsTokenCount", 0)
                + usage.get("toolUsePromptTokenCount", 0)
            )
            out.append({"candidates": candidates, "usageMetadata": usage, **base})
        return out

    def _answer(self, seq: int, body: dict[str, Any], script: GeminiScript) -> _Answer:
        config = body.get("generationConfig") or {}
        thought_tokens = len(reply_tokens(script.thoughts)) if script.thoughts else 0
        function = self._function_to_call(body)
        if function is not None:
            args = placeholder_args(function.get("parameters"))
            signature = f"{FAKE_SIGNATURE_PREFIX}{seq:05d}"
            part = {"functionCall": {"name": function["name"], "args": args}, "thoughtSignature": signature}
            return _Answer(
                [part], script.thoughts, script.finish_reason or "STOP", _ceil4(_json(args)), thought_tokens, []
            )
        text = self._reply_text(body, script)
        finish = "STOP"
        for stop in config.get("stopSequences") or ():
            if stop in text:
                text = text[: text.index(stop)]
        tokens = reply_tokens(text)
        limit = config.get("maxOutputTokens")
        if limit is not None and len(tokens) + thought_tokens > limit:
            tokens, finish = tokens[: max(limit - thought_tokens, 0)], "MAX_TOKENS"
        text = "".join(tokens)
        return _Answer(
            [{"text": text}], script.thoughts, script.finish_reason or finish, len(tokens), thought_tokens, [text]
        )

    def _function_to_call(self, body: dict[str, Any]) -> dict[str, Any] | None:
        declarations = [d for tool in body.get("tools") or () for d in tool.get("functionDeclarations") or ()]
        calling = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
        last = body["contents"][-1]
        if not declarations or calling.get("mode") == "NONE" or last.get("role", "user") != "user":
            return None
        if any("functionResponse" in part for part in last["parts"]):
            return None
        allowed = calling.get("allowedFunctionNames") or [d["name"] for d in declarations]
        return next(d for d in declarations if d["name"] == allowed[0])

    def _reply_text(self, body: dict[str, Any], script: GeminiScript) -> str:
        config = body.get("generationConfig") or {}
        results = [part["functionResponse"] for part in body["contents"][-1]["parts"] if "functionResponse" in part]
        if results:
            return "Tool results: " + "; ".join(f"{r['name']}={_json(r['response'])}" for r in results)
        text = script.reply_text if script.reply_text is not None else self.reply_text
        if config.get("responseMimeType") == "application/json":
            schema = config.get("responseSchema")
            return _json(placeholder_args(schema) if schema else {"text": text})
        return text

    # ------------------------------------------------------------------ embeddings

    def _embeddings(self, model: str, method: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise Reject(400, "Invalid JSON payload received. Expected an object.")
        if method == "embedContent":
            _unknown(body, {"model", "content", "taskType", "title", "outputDimensionality"}, "")
            return {"embedding": self._embed_one(model, body)}
        _unknown(body, {"requests"}, "")
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise Reject(400, "* BatchEmbedContentsRequest.requests: requests is not specified\n")
        if len(requests) > 100:
            raise Reject(400, "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch\n")
        embeddings = []
        for i, item in enumerate(requests):
            _unknown(item, {"model", "content", "taskType", "title", "outputDimensionality"}, f"requests[{i}]")
            if item.get("model") != f"models/{model}":
                raise Reject(
                    400,
                    f"Model names in the batch requests must match the model in the URL "
                    f"(requests[{i}].model is {item.get('model')!r}).",
                )
            embeddings.append(self._embed_one(model, item))
        return {"embeddings": embeddings}

    @staticmethod
    def _embed_one(model: str, item: dict[str, Any]) -> dict[str, Any]:
        content = item.get("content") or {}
        parts = content.get("parts") or []
        if not parts:
            raise Reject(400, "* EmbedContentRequest.content: content is not specified\n")
        text = "".join(part.get("text") or "" for part in parts)
        dimensions = int(item.get("outputDimensionality") or DEFAULT_EMBEDDING_DIMENSIONS)
        return {"values": embedding_vector(text, dimensions)}


def _merged(fragments: list[dict[str, Any]]) -> dict[str, Any]:
    """A plain GenerateContentResponse: the fragments' parts joined per candidate, the last usage."""
    last = fragments[-1]
    if "candidates" not in last:
        return last
    merged: dict[str, Any] = {k: v for k, v in last.items() if k != "candidates"}
    candidates = []
    for i, final in enumerate(last["candidates"]):
        parts: list[dict[str, Any]] = []
        for fragment in fragments:
            for part in fragment["candidates"][i]["content"]["parts"]:
                if parts and "text" in part and "text" in parts[-1] and part.get("thought") == parts[-1].get("thought"):
                    parts[-1] = {**parts[-1], "text": parts[-1]["text"] + part["text"]}
                else:
                    parts.append(dict(part))
        candidates.append({**final, "content": {"parts": parts, "role": "model"}})
    merged["candidates"] = candidates
    return {"candidates": candidates, **{k: v for k, v in merged.items() if k != "candidates"}}
