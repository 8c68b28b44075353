"""A fake Ollama server: a real HTTP server speaking Ollama's native wire format.

It follows Ollama's public API reference closely enough for Tallyhub's Ollama adapter:

* ``POST /api/chat`` -- with ``"stream": false`` one JSON object; otherwise (Ollama's
  default, so a client that omits ``stream`` gets a stream) ``application/x-ndjson``:
  one ``{"model", "created_at", "message": {"role": "assistant", "content": <token>},
  "done": false}`` line per token, then the final line ``{"done": true, "done_reason",
  "total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
  "eval_count", "eval_duration"}`` with empty content. A tool call is one ``done: false``
  line whose message carries ``tool_calls`` (arguments as a JSON *object*), and the final
  ``done_reason`` is still ``"stop"``, as real Ollama says.
* ``POST /api/embed`` -- ``{"model", "embeddings": [[...], ...], "total_duration",
  "load_duration", "prompt_eval_count"}``.
* ``GET /api/tags`` and ``GET /api/version``; any other path is Go's plain-text
  ``404 page not found``.
* Errors are ``{"error": "<text>"}`` with the status: an unknown model is 404
  ``model "x" not found, try pulling it first``; a body Ollama could not decode (content
  that is not a string, tool-call arguments that are not an object, bad base64 images,
  a missing model) is 400.

Deterministic rules (token rules shared with :mod:`tests.fakes.openai_wire`):

* ``prompt_eval_count`` = ``sum(len(content)) // 4 + number of messages`` (images,
  tool calls and roles are not counted);
* the reply is ``reply_text`` (``DEFAULT_REPLY_TEXT`` = ``"Hello from fake ollama"``,
  4 tokens), cut at the first ``options.stop`` sequence, split by ``reply_tokens``
  (word-ish tokens) and truncated to ``options.num_predict`` tokens, which makes
  ``done_reason`` ``"length"``; with ``format: "json"`` the reply is
  ``{"reply": <reply_text>}``; with a schema ``format`` it is the schema's placeholder
  object; with scripted ``thinking`` its tokens stream first as ``message.thinking``;
* when ``tools`` are given and the last message is from the user the answer is a call of
  the first tool with placeholder arguments (see ``placeholder_arguments``);
* ``eval_count`` = tokens produced (thinking + reply, or the tokens of the tool call's
  arguments as JSON text);
* embeddings: ``embedding_vector(text, dimensions or 8)``; ``prompt_eval_count`` =
  ``len(text) // 4 + 1`` per input.

Scripted behaviours (:class:`OllamaScripted`, FIFO, one per ``/api/chat`` or
``/api/embed`` request) combine with ``|``::

    upstream.script(OllamaScripted.error(500, "llama runner process has terminated"),
                    OllamaScripted.break_stream_after(2), OllamaScripted.error_line_after(1, "boom"),
                    OllamaScripted.end_stream_after(3) | OllamaScripted.cache_hit())

Use in tests: ``with FakeOllamaUpstream() as upstream:`` (or ``.start()``/``.stop()``), or as
a subprocess: ``python -m tests.fakes.ollama_upstream --port 0`` prints the port, serves
until SIGTERM, and is driven over ``POST /_fake/script``, ``GET /_fake/requests``,
``POST /_fake/reset``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .fake_server import (
    RECORD_KEY,
    FakeServer,
    RecordedRequest,
    Script,
    drop_connection,
    json_response,
    serve_until_signalled,
)
from .openai_wire import (
    apply_stop,
    count_embedding_tokens,
    count_prompt_tokens,
    embedding_vector,
    placeholder_arguments,
    reply_tokens,
    truncate_tokens,
)

__all__ = ["DEFAULT_MODELS", "DEFAULT_REPLY_TEXT", "FakeOllamaUpstream", "OllamaScripted", "RecordedRequest"]

DEFAULT_REPLY_TEXT = "Hello from fake ollama"
DEFAULT_MODELS = ("llama3.2", "llava", "qwen3", "nomic-embed-text")
CREATED_AT = "2024-01-01T00:00:00.000000Z"
DURATIONS = {
    "total_duration": 5_000_000,
    "load_duration": 1_000_000,
    "prompt_eval_duration": 2_000_000,
    "eval_duration": 2_000_000,
}
ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class OllamaScripted(Script):
    """How the fake answers one model request. Unset fields mean "normal"."""

    delay_seconds: float = 0.0
    error_status: int | None = None  # answer {"error": error_message} with this status
    error_message: str = ""
    raw_status: int | None = None  # answer exactly raw_body with this status
    raw_body: str = ""
    raw_content_type: str = "text/plain"
    break_after: int | None = None  # streams: drop the connection after this many lines; plain: at once
    error_after: int | None = None  # streams: after this many lines, an {"error": error_message} line
    end_after: int | None = None  # streams: end the body cleanly after this many lines, with no done: true
    reply_text: str | None = None
    thinking: str | None = None
    omit_prompt_eval_count: bool = False  # what Ollama does on a full prompt-cache hit

    @classmethod
    def error(cls, status: int, message: str = "an error was encountered while running the model") -> OllamaScripted:
        return cls(error_status=status, error_message=message)

    @classmethod
    def raw(cls, status: int, body: str, content_type: str = "text/plain") -> OllamaScripted:
        return cls(raw_status=status, raw_body=body, raw_content_type=content_type)

    @classmethod
    def delay(cls, seconds: float) -> OllamaScripted:
        return cls(delay_seconds=seconds)

    @classmethod
    def break_stream_after(cls, lines: int) -> OllamaScripted:
        return cls(break_after=lines)

    @classmethod
    def error_line_after(
        cls, lines: int, message: str = "an error was encountered while running the model"
    ) -> OllamaScripted:
        return cls(error_after=lines, error_message=message)

    @classmethod
    def end_stream_after(cls, lines: int) -> OllamaScripted:
        return cls(end_after=lines)

    @classmethod
    def reply(cls, text: str) -> OllamaScripted:
        return cls(reply_text=text)

    @classmethod
    def think(cls, text: str) -> OllamaScripted:
        return cls(thinking=text)

    @classmethod
    def cache_hit(cls) -> OllamaScripted:
        return cls(omit_prompt_eval_count=True)


class Reject(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class FakeOllamaUpstream(FakeServer[OllamaScripted]):
    """Fake Ollama server on ``127.0.0.1`` (ephemeral port unless ``port`` is given).

    Only model requests (``POST /api/chat`` and ``POST /api/embed``) are recorded.
    """

    label = "Ollama"
    control_api = True
    script_type = OllamaScripted

    def __init__(
        self,
        *,
        reply_text: str = DEFAULT_REPLY_TEXT,
        models: tuple[str, ...] = DEFAULT_MODELS,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.reply_text = reply_text
        self.models = tuple(_tagged(model) for model in models)
        self._restore_on_reset("reply_text")

    def build_routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/chat", self._chat),
            web.post("/api/embed", self._embed),
            web.get("/api/tags", self._tags),
            web.get("/api/version", self._version),
            web.route("*", "/{tail:.*}", self._not_found),
        ]

    def _should_record(self, request: web.Request) -> bool:
        return request.method == "POST" and request.path in ("/api/chat", "/api/embed")

    # ---------------------------------------------------------------- plumbing

    async def _prelude(
        self, request: web.Request, record: RecordedRequest, script: OllamaScripted
    ) -> web.StreamResponse | None:
        """Scripted delay / error / raw answer, then the checks Ollama itself makes."""
        if script.delay_seconds:
            await asyncio.sleep(script.delay_seconds)
        if script.error_status is not None:
            return json_response({"error": script.error_message}, script.error_status)
        if script.raw_status is not None:
            return web.Response(status=script.raw_status, text=script.raw_body, content_type=script.raw_content_type)
        body = record.json
        if not isinstance(body, dict):
            raise Reject(400, "invalid character looking for beginning of value")
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise Reject(400, "model is required")
        if _tagged(body["model"]) not in self.models:
            raise Reject(404, f'model "{body["model"]}" not found, try pulling it first')
        return None

    # ---------------------------------------------------------------- /api/chat

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        record, script = request[RECORD_KEY], self._next_script()
        try:
            early = await self._prelude(request, record, script)
            if early is not None:
                return early
            body = record.json
            _validate_chat(body)
        except Reject as rej:
            return json_response({"error": rej.message}, rej.status)
        if script.break_after is not None and body.get("stream") is False:
            return drop_connection(request)
        fragments, message, done_reason, eval_count = self._answer(body, script)
        final = {
            "model": body["model"],
            "created_at": CREATED_AT,
            "done": True,
            "done_reason": done_reason,
            **DURATIONS,
            "eval_count": eval_count,
        }
        if not script.omit_prompt_eval_count:
            final["prompt_eval_count"] = count_prompt_tokens(body["messages"])
        if body.get("stream") is False:
            return json_response({**final, "message": message})
        lines = [
            {"model": body["model"], "created_at": CREATED_AT, "message": fragment, "done": False}
            for fragment in fragments
        ]
        lines.append({**final, "message": {"role": "assistant", "content": ""}})
        return await self._write_stream(request, lines, script)

    def _answer(
        self, body: dict[str, Any], script: OllamaScripted
    ) -> tuple[list[dict[str, Any]], dict[str, Any], str, int]:
        """Stream fragments (one per token; a tool call is one), the whole message, done_reason, eval_count."""
        messages, options = body["messages"], body.get("options") or {}
        tools = body.get("tools") or []
        if tools and messages and messages[-1].get("role") == "user":
            function = tools[0]["function"]
            arguments = json.loads(placeholder_arguments(function.get("parameters")))
            call = {"function": {"name": function["name"], "arguments": arguments}}
            fragment = {"role": "assistant", "content": "", "tool_calls": [call]}
            return [fragment], fragment, "stop", len(reply_tokens(json.dumps(arguments)))
        text = script.reply_text if script.reply_text is not None else self.reply_text
        answer_format = body.get("format")
        if answer_format == "json":
            text = json.dumps({"reply": text})
        elif isinstance(answer_format, dict):
            text = placeholder_arguments(answer_format)
        text, _ = apply_stop(text, options.get("stop"))
        thinking = reply_tokens(script.thinking or "")
        tokens, truncated = truncate_tokens(reply_tokens(text), options.get("num_predict"))
        fragments = [{"role": "assistant", "content": "", "thinking": token} for token in thinking]
        fragments += [{"role": "assistant", "content": token} for token in tokens]
        message = {"role": "assistant", "content": "".join(tokens)}
        if thinking:
            message["thinking"] = "".join(thinking)
        return fragments, message, "length" if truncated else "stop", len(fragments)

    async def _write_stream(
        self, request: web.Request, lines: list[dict[str, Any]], script: OllamaScripted
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for index, line in enumerate(lines):
            if script.break_after is not None and index >= script.break_after:
                return drop_connection(request)
            if script.error_after is not None and index >= script.error_after:
                await response.write(orjson.dumps({"error": script.error_message}) + b"\n")
                break
            if script.end_after is not None and index >= script.end_after:
                break
            await response.write(orjson.dumps(line) + b"\n")
        await response.write_eof()
        return response

    # ---------------------------------------------------------------- /api/embed and the rest

    async def _embed(self, request: web.Request) -> web.StreamResponse:
        record, script = request[RECORD_KEY], self._next_script()
        try:
            early = await self._prelude(request, record, script)
            if early is not None:
                return early
            inputs = record.json.get("input")
            inputs = [inputs] if isinstance(inputs, str) else inputs
            if not isinstance(inputs, list) or not all(isinstance(item, str) for item in inputs):
                raise Reject(400, "invalid input type")
        except Reject as rej:
            return json_response({"error": rej.message}, rej.status)
        if script.break_after is not None:
            return drop_connection(request)
        dimensions = record.json.get("dimensions") or 8
        return json_response(
            {
                "model": record.json["model"],
                "embeddings": [embedding_vector(item, dimensions) for item in inputs],
                "total_duration": DURATIONS["total_duration"],
                "load_duration": DURATIONS["load_duration"],
                "prompt_eval_count": count_embedding_tokens(inputs),
            }
        )

    async def _tags(self, request: web.Request) -> web.StreamResponse:
        return json_response(
            {"models": [{"name": model, "model": model, "modified_at": CREATED_AT, "size": 1} for model in self.models]}
        )

    async def _version(self, request: web.Request) -> web.StreamResponse:
        return json_response({"version": "0.0.0-fake"})

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=404, text="404 page not found", content_type="text/plain")


def _validate_chat(body: dict[str, Any]) -> None:
    """The decoding errors Ollama's Go server gives for a body that does not fit its types."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise Reject(400, "json: cannot unmarshal messages into Go struct field ChatRequest.messages")
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise Reject(400, "invalid message role")
        if not isinstance(message.get("content", ""), str):
            raise Reject(
                400, "json: cannot unmarshal array into Go struct field Message.messages.content of type string"
            )
        for image in message.get("images") or ():
            try:
                base64.b64decode(image, validate=True)
            except (binascii.Error, ValueError, TypeError):
                raise Reject(400, "illegal base64 data at input byte 0") from None
        for call in message.get("tool_calls") or ():
            if not isinstance((call.get("function") or {}).get("arguments"), dict):
                raise Reject(
                    400,
                    "json: cannot unmarshal string into Go struct field "
                    "ToolCallFunction.messages.tool_calls.function.arguments of type api.ToolCallFunctionArguments",
                )
    for tool in body.get("tools") or ():
        if not isinstance(tool, dict) or not isinstance((tool.get("function") or {}).get("name"), str):
            raise Reject(400, "invalid tool definition")
    predict = (body.get("options") or {}).get("num_predict")
    if predict is not None and (not isinstance(predict, int) or isinstance(predict, bool)):
        raise Reject(400, 'option "num_predict" must be of type integer')


def _tagged(model: str) -> str:
    """Ollama's names default to the ``latest`` tag: ``llama3.2`` is ``llama3.2:latest``."""
    return model if ":" in model else f"{model}:latest"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake Ollama upstream (prints the bound port, then serves).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = ephemeral")
    parser.add_argument("--reply-text", default=DEFAULT_REPLY_TEXT)
    args = parser.parse_args(argv)
    asyncio.run(serve_until_signalled(FakeOllamaUpstream(reply_text=args.reply_text, host=args.host, port=args.port)))


if __name__ == "__main__":
    main()
