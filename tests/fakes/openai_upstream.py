"""A fake OpenAI upstream: a real HTTP server speaking OpenAI's wire format.

It mimics the public OpenAI REST API (``https://api.openai.com/v1``) closely
enough for the official ``openai`` SDK and for Tallyhub's gateway:

* ``POST /v1/chat/completions`` -- ``chat.completion`` JSON bodies, or with
  ``"stream": true`` a ``text/event-stream`` of ``data: {chat.completion.chunk}``
  frames ended by ``data: [DONE]``; with ``stream_options.include_usage`` every
  chunk carries ``"usage": null`` and a final ``choices: []`` chunk carries the
  usage.
* ``POST /v1/embeddings`` -- ``float`` or ``base64`` (float32 little-endian)
  vectors, as the SDK requests base64 by default.
* ``GET /v1/models`` and ``GET /v1/models/{id}``.
* Errors use OpenAI's envelope ``{"error": {"message", "type", "param", "code"}}``;
  a missing/wrong ``Authorization: Bearer`` key gives 401 ``invalid_api_key``.

Everything is deterministic (fixed ``created``, sequential ids, token counts
from the rules in :mod:`tests.fakes.openai_wire`).  Every response to a chat or
embeddings request carries ``x-fake-unknown-fields``: the sorted,
comma-separated top-level request keys OpenAI does not document (empty when
there are none), so tests can check that extra fields were passed through.

Use in tests (background thread with its own event loop)::

    with FakeOpenAIUpstream() as upstream:          # or .start() / .stop()
        client = openai.OpenAI(base_url=upstream.base_url, api_key=upstream.api_key)
        upstream.script(Scripted.error(500, "boom"))
        ...
        assert upstream.requests[0].json["model"] == "gpt-4o-mini"

or as a subprocess: ``python -m tests.fakes.openai_upstream --port 0`` prints
the bound port on its first stdout line and serves until SIGTERM/SIGINT.  A
subprocess can be driven over HTTP: ``POST /_fake/script`` (a JSON list of
:meth:`Scripted.to_dict` objects), ``GET /_fake/requests``, ``POST /_fake/reset``
(these are neither authenticated nor recorded).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import orjson
from aiohttp import web

from .fake_server import (
    RECORD_KEY,
    SEQ_KEY,
    FakeServer,
    RecordedRequest,
    drop_connection,
    json_response,
    serve_until_signalled,
)
from .openai_scripts import Scripted
from .openai_validation import Reject, validate_chat, validate_embeddings
from .openai_wire import (
    DEFAULT_REPLY_TEXT,
    KNOWN_CHAT_FIELDS,
    KNOWN_EMBEDDING_FIELDS,
    apply_stop,
    chat_choice,
    chat_completion_body,
    choose_tool,
    chunk_body,
    chunk_choice,
    count_embedding_tokens,
    count_prompt_tokens,
    embedding_vector,
    encode_embedding,
    error_body,
    error_type_for,
    model_body,
    placeholder_arguments,
    reply_tokens,
    tool_call_body,
    truncate_tokens,
    usage_body,
)

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_MODELS",
    "DEFAULT_REPLY_TEXT",
    "FakeOpenAIUpstream",
    "RecordedRequest",
    "Scripted",
    "count_embedding_tokens",
    "count_prompt_tokens",
    "reply_tokens",
]

DEFAULT_API_KEY = "sk-upstream-test-0001"
DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")

_JSON_PARSE_ERROR = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload.)"
)


ONE_PIXEL_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


class FakeOpenAIUpstream(FakeServer[Scripted]):
    """Fake OpenAI API server on ``127.0.0.1`` (ephemeral port unless ``port`` is given).

    ``reply_text`` and ``chunk_delay`` (seconds slept before every stream frame
    after the first) may be changed while running; :meth:`reset` restores the
    constructor values.
    """

    label = "OpenAI"
    base_path = "/v1"
    control_api = True
    script_type = Scripted

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        also_accept: tuple[str, ...] = (),
        reply_text: str = DEFAULT_REPLY_TEXT,
        chunk_delay: float = 0.0,
        models: tuple[str, ...] = DEFAULT_MODELS,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.api_key = api_key
        self.accepted_keys = frozenset((api_key, *also_accept))
        self.reply_text = reply_text
        self.chunk_delay = chunk_delay
        self.models = tuple(models)
        self.endless_bytes_sent = 0  # what ``Scripted.endless_stream`` answers have written so far
        self._restore_on_reset("reply_text", "chunk_delay", "endless_bytes_sent")

    def build_routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self._chat_completions),
            web.post("/v1/embeddings", self._embeddings),
            web.post("/v1/images/generations", self._images),
            web.get("/v1/models", self._list_models),
            web.get("/v1/models/{model}", self._get_model),
            web.route("*", "/{tail:.*}", self._not_found),
        ]

    # ------------------------------------------------------------------ plumbing

    @staticmethod
    def _headers(request: web.Request, known: frozenset[str] | None = None) -> dict[str, str]:
        headers = {
            "x-request-id": f"req_fake{request.get(SEQ_KEY, 0):06d}",
            "openai-version": "2020-10-01",
            "openai-processing-ms": "1",
        }
        record = request.get(RECORD_KEY)
        body = record.json if record is not None else None
        if known is not None and isinstance(body, dict):
            # escaped: a name with a control character would make an invalid header (the server refuses to send it)
            headers["x-fake-unknown-fields"] = ",".join(
                sorted(k.encode("unicode_escape").decode("ascii") for k in body if k not in known)
            )
        return headers

    def _error(
        self,
        status: int,
        message: str,
        headers: dict[str, str],
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> web.Response:
        body = error_body(message, type=type or error_type_for(status), param=param, code=code)
        return json_response(body, status, headers)

    def _check_auth(self, request: web.Request) -> None:
        auth = request.headers.get("Authorization", "")
        scheme, _, key = auth.partition(" ")
        if scheme.lower() == "bearer" and key.strip() in self.accepted_keys:
            return
        if not key.strip():
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
        else:
            shown = key.strip()
            shown = f"{shown[:3]}{'*' * 8}{shown[-4:]}" if len(shown) > 10 else shown
            message = (
                f"Incorrect API key provided: {shown}. You can find your API key at "
                "https://platform.openai.com/account/api-keys."
            )
        raise Reject(401, message, code="invalid_api_key")

    async def _prelude(
        self, request: web.Request, script: Scripted, headers: dict[str, str], *, streaming: bool
    ) -> web.StreamResponse | None:
        """Apply the scripted delay / error / drop, then authenticate.  A response ends the request."""
        headers = dict(headers)
        if script.delay_seconds:
            await asyncio.sleep(script.delay_seconds)
        if script.drop_at_once:
            return drop_connection(request, reset=script.reset)
        if script.error_status is not None:
            if script.retry_after is not None:
                headers["retry-after"] = f"{script.retry_after:g}"
            return self._error(
                script.error_status, script.error_message, headers, type=script.error_type, code=script.error_code
            )
        if script.raw_status is not None:
            return web.Response(
                status=script.raw_status, text=script.raw_body, content_type=script.raw_content_type, headers=headers
            )
        if not streaming:
            if script.break_after is not None:
                return drop_connection(request, reset=script.reset)
            if script.stall_after is not None:
                await asyncio.sleep(script.stall_seconds)
        self._check_auth(request)
        return None

    def _json_body(self, request: web.Request) -> dict[str, Any]:
        body = request[RECORD_KEY].json
        if not isinstance(body, dict):
            raise Reject(400, _JSON_PARSE_ERROR)
        return body

    @staticmethod
    def _usage(script: Scripted, prompt_tokens: int, completion_tokens: int) -> dict[str, Any] | None:
        if script.omit_usage:
            return None
        if script.usage_raw is not None:
            return script.usage_raw
        numbers = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "cached_tokens": 0,
            "reasoning_tokens": 0,
            **script.usage_overrides,
        }
        return usage_body(numbers.pop("prompt_tokens"), numbers.pop("completion_tokens"), **numbers)

    # ------------------------------------------------------------------ chat completions

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        headers = self._headers(request, KNOWN_CHAT_FIELDS)
        raw = request[RECORD_KEY].json
        streaming = isinstance(raw, dict) and raw.get("stream") is True
        script = self._next_script()
        try:
            early = await self._prelude(request, script, headers, streaming=streaming)
            if early is not None:
                return early
            body = self._json_body(request)
            validate_chat(body)
        except Reject as rej:
            return self._error(rej.status, rej.message, headers, param=rej.param, code=rej.code)

        seq = request[SEQ_KEY]
        completion_id = f"chatcmpl-fake{seq:06d}"
        messages, model, n = body["messages"], body["model"], body.get("n") or 1
        tools = body.get("tools") or []
        tool_choice = body.get("tool_choice")
        tool = None
        if tools and tool_choice != "none" and messages[-1].get("role") == "user":
            tool = choose_tool(tools, tool_choice)
        if tool is not None:
            arguments = placeholder_arguments(tool.get("parameters"))
            tokens, finish_reason = reply_tokens(arguments), "tool_calls"
        else:
            text, _ = apply_stop(
                script.reply_text if script.reply_text is not None else self.reply_text, body.get("stop")
            )
            limit = body.get("max_completion_tokens") or body.get("max_tokens")
            tokens, truncated = truncate_tokens(reply_tokens(text), limit)
            finish_reason = "length" if truncated else "stop"
        usage = self._usage(script, count_prompt_tokens(messages), len(tokens) * n)
        call_ids = [f"call_fake{seq:06d}_{i}" for i in range(n)]

        if not streaming:
            if tool is not None:
                choices = [
                    chat_choice(
                        i,
                        content=None,
                        finish_reason=finish_reason,
                        tool_calls=[tool_call_body(call_ids[i], tool["name"], arguments)],
                    )
                    for i in range(n)
                ]
            else:
                choices = [chat_choice(i, content="".join(tokens), finish_reason=finish_reason) for i in range(n)]
            answer = chat_completion_body(
                completion_id=completion_id,
                model=model,
                choices=choices,
                usage=usage,
                service_tier=script.service_tier or "default",
            )
            if script.cut_body_after is not None or script.oversize_bytes is not None:
                return await self._write_faulty_body(request, headers, orjson.dumps(answer), script)
            return json_response(answer, headers=headers)

        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, dict) and bool(stream_options.get("include_usage"))

        def chunk(choices: list[dict[str, Any]], chunk_usage: dict[str, Any] | None = None) -> bytes:
            obj = chunk_body(
                completion_id=completion_id,
                model=model,
                choices=choices,
                include_usage=include_usage,
                usage=chunk_usage,
                service_tier=script.service_tier or "default",
            )
            return b"data: " + orjson.dumps(obj) + b"\n\n"

        frames: list[tuple[str, bytes]] = []
        for i in range(n):
            first: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
            if tool is not None:
                first["content"] = None
                first["tool_calls"] = [{"index": 0, **tool_call_body(call_ids[i], tool["name"], "")}]
            frames.append(("role", chunk([chunk_choice(i, first)])))
        for token in tokens:
            for i in range(n):
                delta = (
                    {"tool_calls": [{"index": 0, "function": {"arguments": token}}]}
                    if tool is not None
                    else {"content": token}
                )
                frames.append(("content", chunk([chunk_choice(i, delta)])))
        for i in range(n):
            frames.append(("finish", chunk([chunk_choice(i, {}, finish_reason)])))
        if include_usage and usage is not None:
            frames.append(("usage", chunk([], usage)))
        if not script.omit_done:
            frames.append(("done", b"data: [DONE]\n\n"))
        if script.endless:
            return await self._write_endless_stream(
                request, headers, frames[0][1], chunk([chunk_choice(0, {"content": " word"})])
            )
        return await self._write_stream(request, headers, frames, script)

    async def _write_faulty_body(
        self, request: web.Request, headers: dict[str, str], body: bytes, script: Scripted
    ) -> web.StreamResponse:
        """A plain answer cut (``cut_body_after``: dropped, or hung then finished) or padded to
        ``oversize_bytes`` with spaces (valid JSON), sent in 1 MiB blocks."""
        size = max(script.oversize_bytes or 0, len(body))
        response = web.StreamResponse(headers={**headers, "Content-Type": "application/json"})
        response.content_length = size
        await response.prepare(request)
        if script.cut_body_after is not None:
            await response.write(body[: script.cut_body_after])
            if not script.hang_body_seconds:
                return drop_connection(request, reset=script.reset)
            await asyncio.sleep(script.hang_body_seconds)
            await response.write(body[script.cut_body_after :])
        else:
            await response.write(body)
            block = b" " * (1024 * 1024)
            left = size - len(body)
            while left > 0:
                await response.write(block[: min(left, len(block))])
                left -= len(block)
        await response.write_eof()
        return response

    async def _write_endless_stream(
        self, request: web.Request, headers: dict[str, str], first: bytes, content: bytes
    ) -> web.StreamResponse:
        """The role chunk, then ``content`` again and again until the client goes away."""
        response = web.StreamResponse(
            headers={**headers, "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        await response.write(first)
        burst = content * 64
        while True:
            await response.write(burst)  # waits while the client's side is full (flow control)
            self.endless_bytes_sent += len(burst)
            await asyncio.sleep(0)

    async def _write_stream(
        self, request: web.Request, headers: dict[str, str], frames: list[tuple[str, bytes]], script: Scripted
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={**headers, "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        delay = script.chunk_delay_seconds if script.chunk_delay_seconds is not None else self.chunk_delay
        sent_content, stalled = 0, False
        for index, (kind, data) in enumerate(frames):
            if script.break_after is not None and kind != "role" and sent_content >= script.break_after:
                return drop_connection(request, reset=script.reset)
            if index and delay:
                await asyncio.sleep(delay)
            await response.write(data)
            sent_content += kind == "content"
            if (
                script.stall_after is not None
                and not stalled
                and kind in ("role", "content")
                and sent_content == script.stall_after
            ):
                stalled = True
                await asyncio.sleep(script.stall_seconds)
        await response.write_eof()
        return response

    # ------------------------------------------------------------------ embeddings & models

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        headers = self._headers(request, KNOWN_EMBEDDING_FIELDS)
        script = self._next_script()
        try:
            early = await self._prelude(request, script, headers, streaming=False)
            if early is not None:
                return early
            body = self._json_body(request)
            inputs, dimensions, encoding = validate_embeddings(body)
        except Reject as rej:
            return self._error(rej.status, rej.message, headers, param=rej.param, code=rej.code)
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": encode_embedding(embedding_vector(item, dimensions), encoding),
            }
            for i, item in enumerate(inputs)
        ]
        result: dict[str, Any] = {"object": "list", "data": data, "model": body["model"]}
        if not script.omit_usage:
            tokens = script.usage_overrides.get("prompt_tokens", count_embedding_tokens(inputs))
            result["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return json_response(result, headers=headers)

    async def _images(self, request: web.Request) -> web.StreamResponse:
        """``n`` tiny images (a 1×1 PNG) as ``b64_json``; gpt-image models also report token
        usage (input = prompt characters // 4, output = 272 per image), dall-e models none."""
        headers = self._headers(request)
        script = self._next_script()
        try:
            early = await self._prelude(request, script, headers, streaming=False)
            if early is not None:
                return early
            body = self._json_body(request)
            if not isinstance(body.get("prompt"), str) or not body["prompt"]:
                raise Reject(400, "'prompt' is a required property", param="prompt")
        except Reject as rej:
            return self._error(rej.status, rej.message, headers, param=rej.param, code=rej.code)
        n = body.get("n") or 1
        result: dict[str, Any] = {"created": 1_700_000_000, "data": [{"b64_json": ONE_PIXEL_PNG}] * n}
        if str(body.get("model", "")).startswith("gpt-image") and not script.omit_usage:
            result["usage"] = {
                "input_tokens": len(body["prompt"]) // 4,
                "output_tokens": 272 * n,
                "total_tokens": len(body["prompt"]) // 4 + 272 * n,
            }
        return json_response(result, headers=headers)

    async def _list_models(self, request: web.Request) -> web.StreamResponse:
        headers = self._headers(request)
        try:
            self._check_auth(request)
        except Reject as rej:
            return self._error(rej.status, rej.message, headers, code=rej.code)
        return json_response({"object": "list", "data": [model_body(m) for m in self.models]}, headers=headers)

    async def _get_model(self, request: web.Request) -> web.StreamResponse:
        headers = self._headers(request)
        model = request.match_info["model"]
        try:
            self._check_auth(request)
            if model not in self.models:
                raise Reject(404, f"The model '{model}' does not exist", param="model", code="model_not_found")
        except Reject as rej:
            return self._error(rej.status, rej.message, headers, param=rej.param, code=rej.code)
        return json_response(model_body(model), headers=headers)

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        return self._error(404, f"Invalid URL ({request.method} {request.path})", self._headers(request))


# ---------------------------------------------------------------------- subprocess entry point


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI upstream (prints the bound port, then serves).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = ephemeral")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--reply-text", default=DEFAULT_REPLY_TEXT)
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between stream frames")
    args = parser.parse_args(argv)
    upstream = FakeOpenAIUpstream(
        api_key=args.api_key, reply_text=args.reply_text, chunk_delay=args.chunk_delay, host=args.host, port=args.port
    )
    asyncio.run(serve_until_signalled(upstream))


if __name__ == "__main__":
    main()
