"""Ollama's native API (``POST /api/chat``, ``POST /api/embed``), translated both ways to
OpenAI's format, for kind ``ollama``.

Requests: messages keep their roles (``developer`` becomes ``system``); text parts are
joined; ``data:`` image URLs become the message's ``images`` (base64); an assistant's
``tool_calls`` carry their arguments as JSON objects and a ``tool`` message gets the
``tool_name`` of the call it answers; ``tools`` pass in OpenAI's function format; max
tokens, temperature, top_p, seed, stop and the penalties go to ``options``;
``response_format`` becomes ``format`` (``"json"`` or the JSON schema).
Answers: one ``chat.completion`` document, or ``chat.completion.chunk`` payloads — a role
chunk, deltas, a finish chunk, a usage chunk with ``choices: []`` — then ``DONE``.

Invariants:
- what Ollama cannot do as asked (``n`` > 1, an image by http URL, tool-call arguments
  that are not a JSON object, an unknown content part) is refused with InvalidRequest
  before anything is sent;
- ``DONE`` follows only Ollama's ``done: true`` object: a stream that ends without it, or
  carries an ``{"error": ...}`` line, raises OllamaStreamError (a MalformedUpstreamAnswer,
  so one of READ_FAILURES) while it is read;
- usage is Ollama's own count: ``prompt_tokens = prompt_eval_count`` and
  ``completion_tokens = eval_count``. Ollama omits ``prompt_eval_count`` when the whole
  prompt was served from its prompt cache; ``prompt_tokens`` is then 0 — what Ollama
  evaluated — never a guess.
"""

import base64
import binascii
import struct
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import aiohttp
import orjson

from adapters.providers.base import (
    DONE,
    ProviderBase,
    ResponseExchange,
    UpstreamTimeouts,
    arrived_blocks,
    read_answer,
    upstream_json,
)
from adapters.providers.errors import error_for_status, post, probe_with_get, read_error_body, redact
from adapters.providers.ollama_models import list_ollama_models
from application.model_discovery import ProviderModel
from application.routing import Route
from domain.errors import InvalidRequest, MalformedUpstreamAnswer, UpstreamError

DEFAULT_BASE_URL = "http://127.0.0.1:11434"
MAX_LINE_BYTES = 16 * 1024 * 1024  # one NDJSON object; longer means the stream is garbage
_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}
_OPTIONS = ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty")


class OllamaStreamError(MalformedUpstreamAnswer):
    """Ollama broke off an answer or reported an error inside it."""


class OllamaProvider(ProviderBase):
    def __init__(self, session: aiohttp.ClientSession, *, timeout_seconds: float) -> None:
        self.session = session
        self.timeouts = UpstreamTimeouts(timeout_seconds)  # per provider: the route carries its policy

    async def start_chat(self, route: Route, body: dict[str, Any]) -> "OllamaExchange":
        """Translate and send the request; return the open 2xx exchange or raise UpstreamError."""
        payload = chat_request(route.upstream_model, body)
        response = await self._post(route, "/api/chat", payload)
        return OllamaExchange(response, model=route.upstream_model)

    async def embed(self, route: Route, body: dict[str, Any]) -> bytes:
        """An OpenAI embeddings request → ``/api/embed`` → an OpenAI embeddings JSON document."""
        payload = embed_request(route.upstream_model, body)
        response = await self._post(route, "/api/embed", payload)
        try:
            data = upstream_json(await read_answer(response))
            result = embeddings_from_ollama(data, model=route.upstream_model, encoding=body.get("encoding_format"))
        except TimeoutError:
            raise UpstreamError(f"provider {route.provider!r} timed out", status=504, code="upstream_timeout") from None
        except (aiohttp.ClientError, MalformedUpstreamAnswer):
            raise UpstreamError(
                f"provider {route.provider!r} sent an unreadable response", status=502, code="upstream_bad_response"
            ) from None
        finally:
            response.release()
        return orjson.dumps(result)

    async def probe(self, route: Route) -> bool | None:
        """Is the credential accepted? ``GET /api/version`` costs no tokens. None: could not tell."""
        return await probe_with_get(self.session, _url(route, "/api/version"), _auth(route))

    async def list_models(self, route: Route) -> list[ProviderModel]:
        """``GET /api/tags`` (adapters/providers/ollama_models.py)."""
        return await list_ollama_models(self.session, route, _url(route, "/api/tags"), _auth(route))

    async def _post(self, route: Route, path: str, payload: dict[str, Any]) -> aiohttp.ClientResponse:
        headers = {"content-type": "application/json", **_auth(route)}
        response = await post(
            self.session,
            route,
            _url(route, path),
            data=orjson.dumps(payload),
            headers=headers,
            timeout=self.timeouts.for_route(route),
        )
        if response.status >= 300:
            raise await _upstream_error(route, response)
        return response


def _url(route: Route, path: str) -> str:
    return (route.base_url or DEFAULT_BASE_URL).rstrip("/") + path


def _auth(route: Route) -> dict[str, str]:
    """A local Ollama takes no credential; one behind an authenticating proxy may need one."""
    return {"authorization": f"Bearer {route.secret}"} if route.secret else {}


class OllamaExchange(ResponseExchange):
    """One ``/api/chat`` call in flight, read as OpenAI's format."""

    def __init__(self, response: aiohttp.ClientResponse, *, model: str) -> None:
        self.response = response
        self.head = {"id": f"chatcmpl-{uuid4().hex}", "created": int(time.time()), "model": model}

    async def read_completion(self) -> bytes:
        data = upstream_json(await read_answer(self.response))
        if not isinstance(data, dict):
            raise OllamaStreamError("Ollama's answer is not a JSON object")
        return orjson.dumps(completion_from_ollama(data, self.head))

    def stream_data(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        stream = _StreamTranslator(self.head)
        async for item in ndjson_objects(self.response):
            for chunk in stream.take(item):
                yield orjson.dumps(chunk)
            if stream.finished:
                yield DONE
                return
        raise OllamaStreamError("Ollama ended the stream without its final (done: true) object")


# ---------------------------------------------------------------- OpenAI → Ollama


def chat_request(model: str, body: dict[str, Any]) -> dict[str, Any]:
    """The ``/api/chat`` body for an OpenAI chat-completions body; raises InvalidRequest."""
    if body.get("n") not in (None, 1):
        raise InvalidRequest("Ollama gives one answer per request: 'n' must be 1", param="n")
    request: dict[str, Any] = {
        "model": model,
        "messages": _messages(body.get("messages")),
        "stream": body.get("stream") is True,
    }
    tools = _tools(body)
    if tools:
        request["tools"] = tools
    options = _options(body)
    if options:
        request["options"] = options
    answer_format = _format(body.get("response_format"))
    if answer_format is not None:
        request["format"] = answer_format
    return request


def _messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list):
        raise InvalidRequest("'messages' must be an array", param="messages")
    tool_names: dict[str, str] = {}  # tool call id → function name, the latest assistant turn winning
    converted = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        role = _ROLES.get(str(message.get("role"))) if isinstance(message, dict) else None
        if role is None:
            raise InvalidRequest(f"{where} has a role Ollama does not know", param=where)
        text, images = _content(message.get("content"), where)
        entry: dict[str, Any] = {"role": role, "content": text}
        if images:
            entry["images"] = images
        if role == "assistant" and message.get("tool_calls"):
            entry["tool_calls"] = _tool_calls(message["tool_calls"], where, tool_names)
        if role == "tool":
            name = tool_names.get(str(message.get("tool_call_id"))) or message.get("name")
            if isinstance(name, str) and name:
                entry["tool_name"] = name
        converted.append(entry)
    return converted


def _content(content: Any, where: str) -> tuple[str, list[str]]:
    """Text (parts joined) and base64 images of one message's content."""
    if content is None or isinstance(content, str):
        return content or "", []
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}.content must be a string or an array of parts", param=f"{where}.content")
    texts, images = [], []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal") and isinstance(part.get(kind), str):
            texts.append(part[kind])
        elif kind == "image_url":
            images.append(_image(part.get("image_url"), f"{where}.content[{index}]"))
        else:
            raise InvalidRequest(
                f"{where}.content[{index}]: Ollama takes text and image parts only", param=f"{where}.content"
            )
    return "".join(texts), images


def _image(image_url: Any, where: str) -> str:
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str):
        raise InvalidRequest(f"{where}.image_url.url must be a string", param=where)
    if not url.startswith("data:"):
        raise InvalidRequest(
            f"{where}: Ollama cannot fetch images by URL; send the image inline as a base64 data: URL", param=where
        )
    header, comma, data = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise InvalidRequest(f"{where}: an image data: URL must be base64-encoded", param=where)
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{where}: the image data is not valid base64", param=where) from None
    return data


def _tool_calls(calls: Any, where: str, tool_names: dict[str, str]) -> list[dict[str, Any]]:
    if not isinstance(calls, list):
        raise InvalidRequest(f"{where}.tool_calls must be an array", param=f"{where}.tool_calls")
    converted = []
    for index, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(function, dict) or not isinstance(name, str) or not name:
            raise InvalidRequest(f"{where}.tool_calls[{index}] needs a function name", param=f"{where}.tool_calls")
        arguments = _arguments(function.get("arguments"), f"{where}.tool_calls[{index}]")
        if isinstance(call.get("id"), str):
            tool_names[call["id"]] = name
        converted.append({"function": {"name": name, "arguments": arguments}})
    return converted


def _arguments(arguments: Any, where: str) -> dict[str, Any]:
    """OpenAI sends arguments as JSON text; Ollama wants the object itself."""
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, str):
        try:
            arguments = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            arguments = None
    if not isinstance(arguments, dict):
        raise InvalidRequest(f"{where}.function.arguments must be a JSON object", param=where)
    return arguments


def _tools(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    tools = body.get("tools")
    if tools is None and isinstance(body.get("functions"), list):  # the legacy spelling
        tools = [{"type": "function", "function": function} for function in body["functions"]]
    if not tools or body.get("tool_choice") == "none":
        return None
    if not isinstance(tools, list) or not all(
        isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("function"), dict)
        for tool in tools
    ):
        raise InvalidRequest("Ollama takes tools of type 'function' only", param="tools")
    return [{"type": "function", "function": tool["function"]} for tool in tools]


def _options(body: dict[str, Any]) -> dict[str, Any]:
    options = {name: body[name] for name in _OPTIONS if body.get(name) is not None}
    given = [body.get(name) for name in ("max_completion_tokens", "max_tokens")]
    limits: list[int] = [limit for limit in given if isinstance(limit, int) and not isinstance(limit, bool)]
    if limits:
        options["num_predict"] = min(limits)
    stop = body.get("stop")
    if isinstance(stop, str):
        options["stop"] = [stop]
    elif isinstance(stop, list) and stop:
        options["stop"] = stop
    return options


def _format(response_format: Any) -> str | dict[str, Any] | None:
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        json_schema = response_format.get("json_schema")
        schema = json_schema.get("schema") if isinstance(json_schema, dict) else None
        if isinstance(schema, dict):
            return schema
        raise InvalidRequest("response_format.json_schema.schema must be an object", param="response_format")
    raise InvalidRequest("response_format.type must be 'text', 'json_object' or 'json_schema'", param="response_format")


def embed_request(model: str, body: dict[str, Any]) -> dict[str, Any]:
    """The ``/api/embed`` body for an OpenAI embeddings body; raises InvalidRequest."""
    inputs = body.get("input")
    texts = isinstance(inputs, list) and inputs and all(isinstance(item, str) for item in inputs)
    if not isinstance(inputs, str) and not texts:
        raise InvalidRequest(
            "Ollama embeds text: 'input' must be a string or a non-empty array of strings", param="input"
        )
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise InvalidRequest("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    request: dict[str, Any] = {"model": model, "input": inputs}
    dimensions = body.get("dimensions")
    if dimensions is not None:
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1:
            raise InvalidRequest("'dimensions' must be a positive integer", param="dimensions")
        request["dimensions"] = dimensions
    return request


# ---------------------------------------------------------------- Ollama → OpenAI


def completion_from_ollama(data: dict[str, Any], head: dict[str, Any]) -> dict[str, Any]:
    """A finished ``/api/chat`` answer → a ``chat.completion`` document."""
    _raise_on_error(data)
    if data.get("done") is not True:
        raise OllamaStreamError("Ollama's answer is not finished (no done: true)")
    message = data.get("message")
    if not isinstance(message, dict):
        message = {}
    calls = _openai_tool_calls(message.get("tool_calls"), first=0)
    answer: dict[str, Any] = {"role": "assistant", "content": message.get("content") or (None if calls else "")}
    if calls:
        answer["tool_calls"] = calls
    thinking = message.get("thinking")
    if isinstance(thinking, str) and thinking:
        answer["reasoning_content"] = thinking
    choice = {
        "index": 0,
        "message": answer,
        "logprobs": None,
        "finish_reason": _finish_reason(data.get("done_reason"), bool(calls)),
    }
    return {**head, "object": "chat.completion", "choices": [choice], "usage": usage_from_ollama(data)}


def usage_from_ollama(data: dict[str, Any]) -> dict[str, int]:
    """OpenAI's usage object from Ollama's counts (a missing count is 0: see the module docstring)."""
    prompt, completion = _count(data.get("prompt_eval_count")), _count(data.get("eval_count"))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class _StreamTranslator:
    """Ollama's NDJSON objects → OpenAI chunks, one object at a time."""

    def __init__(self, head: dict[str, Any]) -> None:
        self.head = head
        self.started = False
        self.finished = False
        self.tool_calls = 0

    def take(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        chunks = []
        if not self.started:
            self.started = True
            chunks.append(self._chunk({"role": "assistant", "content": ""}))
        message = item.get("message")
        if not isinstance(message, dict):
            message = {}
        thinking, content = message.get("thinking"), message.get("content")
        if isinstance(thinking, str) and thinking:
            chunks.append(self._chunk({"reasoning_content": thinking}))
        if isinstance(content, str) and content:
            chunks.append(self._chunk({"content": content}))
        calls = _openai_tool_calls(message.get("tool_calls"), first=self.tool_calls)
        if calls:
            self.tool_calls += len(calls)
            chunks.append(self._chunk({"tool_calls": calls}))
        if item.get("done") is True:
            self.finished = True
            chunks.append(self._chunk({}, _finish_reason(item.get("done_reason"), self.tool_calls > 0)))
            chunks.append(
                {**self.head, "object": "chat.completion.chunk", "choices": [], "usage": usage_from_ollama(item)}
            )
        return chunks

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**self.head, "object": "chat.completion.chunk", "choices": [choice]}


def _openai_tool_calls(calls: Any, *, first: int) -> list[dict[str, Any]]:
    """Ollama's tool calls (arguments as objects) → OpenAI's, ids ``call_<n>`` from ``first``."""
    if not calls:
        return []
    if not isinstance(calls, list):
        raise OllamaStreamError("Ollama sent tool_calls that are not an array")
    converted = []
    for offset, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise OllamaStreamError("Ollama sent a tool call without a function name")
        arguments = function.get("arguments")
        text = arguments if isinstance(arguments, str) else orjson.dumps(arguments or {}).decode()
        number = first + offset
        converted.append(
            {
                "index": number,
                "id": f"call_{number}",
                "type": "function",
                "function": {"name": function["name"], "arguments": text},
            }
        )
    return converted


def _finish_reason(done_reason: Any, called_tools: bool) -> str:
    """Ollama says ``stop`` even when it called tools; ``load``/``unload`` generate nothing."""
    if called_tools:
        return "tool_calls"
    return "length" if done_reason == "length" else "stop"


def embeddings_from_ollama(data: Any, *, model: str, encoding: str | None) -> dict[str, Any]:
    """An ``/api/embed`` answer → OpenAI's embeddings list (``base64`` = float32 little-endian)."""
    if not isinstance(data, dict):
        raise OllamaStreamError("Ollama's answer is not a JSON object")
    _raise_on_error(data)
    vectors = data.get("embeddings")
    if not isinstance(vectors, list) or not all(isinstance(vector, list) for vector in vectors):
        raise OllamaStreamError("Ollama's answer has no embeddings")
    items = [
        {"object": "embedding", "index": index, "embedding": _encoded(vector, encoding)}
        for index, vector in enumerate(vectors)
    ]
    tokens = _count(data.get("prompt_eval_count"))
    return {
        "object": "list",
        "data": items,
        "model": data.get("model") or model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _encoded(vector: list[Any], encoding: str | None) -> list[float] | str:
    if encoding == "base64":
        try:
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
        except struct.error:
            raise OllamaStreamError("Ollama sent an embedding that is not a list of numbers") from None
    return vector


async def ndjson_objects(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of a newline-delimited JSON body, one per line; raises on error lines."""
    pending = b""
    async for data in arrived_blocks(response.content):
        *lines, pending = (pending + data).split(b"\n")
        for line in lines:
            if line.strip():
                yield _parse_line(line)
        if len(pending) > MAX_LINE_BYTES:
            raise OllamaStreamError("Ollama sent a line longer than the gateway accepts")
    if pending.strip():
        yield _parse_line(pending)


def _parse_line(line: bytes) -> dict[str, Any]:
    item = upstream_json(line)
    if not isinstance(item, dict):
        raise OllamaStreamError("Ollama sent a stream line that is not a JSON object")
    _raise_on_error(item)
    return item


def _raise_on_error(item: dict[str, Any]) -> None:
    if item.get("error"):
        raise OllamaStreamError(f"Ollama reported an error: {str(item['error'])[:200]}")


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


async def _upstream_error(route: Route, response: aiohttp.ClientResponse) -> UpstreamError:
    """The shared mapping; Ollama's errors are ``{"error": "text"}``."""
    raw = await read_error_body(response)
    status, message = response.status, _error_message(raw, route.secret)
    if status == 404 and message is None:  # not Ollama's JSON: a wrong base URL, not a missing model
        return UpstreamError(
            f"provider {route.provider!r} has no Ollama API at its base URL", status=502, code="upstream_error"
        )
    return error_for_status(route, status, message or "", retry_after=response.headers.get("retry-after"))


def _error_message(raw: bytes, secret: str | None) -> str | None:
    """The text of Ollama's ``{"error": ...}`` (or an OpenAI-shaped error); None if it is neither."""
    try:
        error = orjson.loads(raw).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if isinstance(error, dict):
        error = error.get("message")
    if not isinstance(error, str) or not error:
        return None
    return redact(error, secret)
