"""A fake Amazon Bedrock Runtime: a real HTTP server speaking Bedrock's wire format.

It mimics the public Bedrock Runtime REST API closely enough for Tallyhub's adapter:

* ``POST /model/{modelId}/converse`` -- a Converse JSON answer
  (``output.message.content``, ``stopReason``, ``usage``, ``metrics``).
* ``POST /model/{modelId}/converse-stream`` -- a real ``application/vnd.amazon.eventstream``
  body (binary messages: prelude, ``:event-type`` / ``:message-type`` / ``:content-type``
  headers, JSON payload, CRC32s): ``messageStart``, ``contentBlockStart`` (toolUse),
  ``contentBlockDelta``, ``contentBlockStop``, ``messageStop``, ``metadata``. Each message
  is written in two pieces, so a decoder must cope with split messages.
* ``POST /model/{modelId}/invoke`` -- Titan text embeddings ``{"inputText", "dimensions"?}``
  → ``{"embedding", "inputTextTokenCount"}``.

Every request must carry a valid AWS Signature Version 4 (service ``bedrock``, the
fake's region): the fake recomputes it with botocore from the request exactly as
received. Unknown access key id or session token → 403 ``UnrecognizedClientException``;
wrong secret, scope or date → 403 ``InvalidSignatureException``; nothing signed → 403
``MissingAuthenticationTokenException``. Errors are ``{"message": ...}`` with an
``x-amzn-ErrorType`` header, as Bedrock sends them. Converse bodies are validated
against botocore's own model of the Bedrock Runtime API (unknown keys rejected, which
may be stricter than Bedrock) plus Bedrock's conversation rules (starts with ``user``,
roles alternate, no blank text, tool blocks need ``toolConfig``, tool results answer
the previous turn's tool uses, images decode to their declared format).

Deterministic answers:

* text: the reply text (default ``DEFAULT_REPLY_TEXT``) cut before the earliest stop
  sequence (``stop_sequence``), then cut to ``maxTokens`` tokens (``max_tokens``),
  else ``end_turn``. Tokens are words with their leading space
  (``tests.fakes.openai_wire.reply_tokens``); a stream sends one delta per token.
* tool use: when ``toolConfig`` is given and the last message holds no ``toolResult``,
  the fake calls the tool named by ``toolChoice.tool`` (else the first tool) with
  placeholder arguments for its schema (``placeholder_arguments``), ``toolUseId``
  ``tooluse_fake{seq:06d}``, ``stopReason`` ``tool_use``; a stream sends the input's
  compact JSON in 8-character ``toolUse.input`` fragments, each counted as one token.
* ``inputTokens = chars // 4 + len(messages) + 100 * images``, where ``chars`` counts
  system texts, text blocks, tool-result texts and compact-JSON tool-use inputs;
  ``outputTokens`` = tokens of the text (and reasoning) plus tool-input fragments produced;
  ``totalTokens = inputTokens + outputTokens + cacheRead + cacheWrite``.
* reasoning (scripted, ``with_reasoning``): a ``reasoningContent`` block first, signed
  REASONING_SIGNATURE, then a ``redactedContent`` one (REDACTED_DATA) when asked
  (``with_redacted_reasoning``); streamed as text deltas, then the signature. A request's
  ``reasoningText`` must carry REASONING_SIGNATURE ("signature is invalid"), and
  ``additionalModelRequestFields.thinking.budget_tokens`` must be at least 1024 and below
  ``maxTokens``, as Bedrock's Claude models require.
* embeddings: ``embedding_vector(text, dimensions or 1024)``,
  ``inputTextTokenCount = len(text) // 4 + 1``.

Scripted behaviours (:class:`BedrockScript`) are consumed FIFO, one per request that
passed authentication.

    with FakeBedrockUpstream(access_key_id="AKIA...", secret_access_key="...", region="us-east-1") as fake:
        fake.script(BedrockScript.error(429, "ThrottlingException", "Too many requests"))
        ...
        assert fake.requests[0].signature_valid
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import struct
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any, cast
from urllib.parse import unquote

import orjson
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.session import get_session
from botocore.validate import ParamValidator

from .fake_server import (
    RECORD_KEY,
    SEQ_KEY,
    FakeServer,
    RecordedRequest,
    Script,
    drop_connection,
    flat_headers,
    json_response,
    parse_json,
)
from .openai_wire import apply_stop, embedding_vector, placeholder_arguments, reply_tokens, truncate_tokens

__all__ = ["DEFAULT_REPLY_TEXT", "BedrockRequest", "BedrockScript", "FakeBedrockUpstream", "encode_event_message"]

DEFAULT_ACCESS_KEY_ID = "AKIAFAKEBEDROCK00001"
DEFAULT_SECRET_ACCESS_KEY = "fake/Secret+Access/Key0000000000000000001"
DEFAULT_REGION = "us-east-1"
DEFAULT_REPLY_TEXT = "Hello from fake Bedrock"
IMAGE_TOKENS = 100
ARGUMENT_FRAGMENT_CHARS = 8
MAX_CLOCK_SKEW_SECONDS = 300
_PADDING = "abcdefghijklmnopqrstuvwxyz"
_IMAGE_MAGIC = {
    "png": (b"\x89PNG\r\n\x1a\n",),
    "jpeg": (b"\xff\xd8\xff",),
    "gif": (b"GIF87a", b"GIF89a"),
    "webp": (b"RIFF",),
}


REASONING_SIGNATURE = "fake-sig"
REDACTED_DATA = "cmVkYWN0ZWQgcmVhc29uaW5n"


class Reject(Exception):
    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message


@dataclass(frozen=True)
class BedrockScript(Script):
    """How the fake answers one request. Unset fields mean "normal"."""

    delay_seconds: float = 0.0
    error_status: int | None = None
    error_type: str = ""
    error_message: str = ""
    drop: bool = False  # close the connection without any response
    break_after: int | None = None  # stream: send this many events, then drop the connection
    end_after: int | None = None  # stream: send this many events, then end the body cleanly
    partial_event: bool = False  # with end_after: also send the first half of the next event
    exception_after: int | None = None  # stream: send this many events, then an exception message
    exception_type: str = "modelStreamErrorException"
    exception_message: str = "The model stream failed."
    reply_text: str | None = None
    preamble: str | None = None  # a text block before the tool use
    reasoning: str | None = None  # a reasoningContent block before the answer
    redacted: bool = False  # with reasoning: a redactedContent block after it
    stop_reason: str | None = None
    usage_overrides: dict[str, int] = field(default_factory=dict)

    @classmethod
    def error(cls, status: int, error_type: str, message: str = "") -> BedrockScript:
        return cls(error_status=status, error_type=error_type, error_message=message or f"{error_type} (fake)")

    @classmethod
    def dropped(cls) -> BedrockScript:
        return cls(drop=True)

    @classmethod
    def delay(cls, seconds: float) -> BedrockScript:
        return cls(delay_seconds=seconds)

    @classmethod
    def break_stream_after(cls, events: int) -> BedrockScript:
        return cls(break_after=events)

    @classmethod
    def end_stream_after(cls, events: int, *, partial_event: bool = False) -> BedrockScript:
        return cls(end_after=events, partial_event=partial_event)

    @classmethod
    def exception_event_after(
        cls, events: int, exception_type: str = "modelStreamErrorException", message: str = "The model stream failed."
    ) -> BedrockScript:
        return cls(exception_after=events, exception_type=exception_type, exception_message=message)

    @classmethod
    def reply(cls, text: str) -> BedrockScript:
        return cls(reply_text=text)

    @classmethod
    def with_preamble(cls, text: str) -> BedrockScript:
        return cls(preamble=text)

    @classmethod
    def with_reasoning(cls, text: str) -> BedrockScript:
        return cls(reasoning=text)

    @classmethod
    def with_redacted_reasoning(cls, text: str) -> BedrockScript:
        return cls(reasoning=text, redacted=True)

    @classmethod
    def stop(cls, reason: str) -> BedrockScript:
        return cls(stop_reason=reason)

    @classmethod
    def usage(cls, **numbers: int) -> BedrockScript:
        """Override usage numbers (keys: inputTokens, outputTokens, cacheReadInputTokens, cacheWriteInputTokens)."""
        return cls(usage_overrides=numbers)


@dataclass(kw_only=True)
class BedrockRequest(RecordedRequest):
    """One request as the fake received it (``path`` percent-decoded), and what its SigV4 check found."""

    raw_path: str  # as sent, e.g. /model/anthropic.claude-v2%3A1/converse
    model_id: str | None
    operation: str | None  # converse | converse-stream | invoke
    signature_valid: bool | None = None
    auth_error: str | None = None


# ---------------------------------------------------------------------- event-stream encoding


def encode_event_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One ``application/vnd.amazon.eventstream`` message with string headers and both CRC32s."""
    encoded = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded += struct.pack("!B", len(raw_name)) + raw_name + b"\x07" + struct.pack("!H", len(raw_value)) + raw_value
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack("!II", total, len(encoded))
    message = prelude + struct.pack("!I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack("!I", zlib.crc32(message))


def _event(event_type: str, payload: dict[str, Any], seq: int) -> bytes:
    body = {**payload, "p": _PADDING[: 1 + seq % len(_PADDING)]}
    return encode_event_message(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}, orjson.dumps(body)
    )


def _exception(exception_type: str, message: str) -> bytes:
    payload: dict[str, Any] = {"message": message}
    if exception_type == "modelStreamErrorException":
        payload.update(originalStatusCode=500, originalMessage=message)
    return encode_event_message(
        {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"},
        orjson.dumps(payload),
    )


# ---------------------------------------------------------------------- request validation


@cache
def _input_shape(operation: str) -> Any:
    name = {"converse": "Converse", "converse-stream": "ConverseStream"}[operation]
    return get_session().get_service_model("bedrock-runtime").operation_model(name).input_shape


def validate_converse(body: Any, model_id: str, operation: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Reject(400, "SerializationException", "Unable to parse the request body as JSON")
    report = ParamValidator().validate({"modelId": model_id, **body}, _input_shape(operation))
    if report.has_errors():
        raise Reject(400, "ValidationException", report.generate_report())
    messages = body.get("messages") or []
    if not messages or messages[0]["role"] != "user":
        raise Reject(
            400,
            "ValidationException",
            "A conversation must start with a user message. "
            "Try again with a conversation that starts with a user message.",
        )
    pending_ids: list[str] = []
    for i, message in enumerate(messages):
        if message["role"] not in ("user", "assistant") or (i and message["role"] == messages[i - 1]["role"]):
            raise Reject(
                400,
                "ValidationException",
                "A conversation must alternate between user and assistant "
                "roles. Make sure the conversation alternates between user and assistant roles and try again.",
            )
        if not message["content"]:
            raise Reject(
                400,
                "ValidationException",
                f"The content field in the Message object at messages.{i} is "
                "empty. Add a ContentBlock object to the content field and try again.",
            )
        for j, block in enumerate(message["content"]):
            _validate_block(block, f"messages.{i}.content.{j}", message["role"], body)
            signature = block.get("reasoningContent", {}).get("reasoningText", {}).get("signature", REASONING_SIGNATURE)
            if signature != REASONING_SIGNATURE:
                raise Reject(
                    400, "ValidationException", f"The reasoning signature at messages.{i}.content.{j} is invalid."
                )
        results = [b["toolResult"]["toolUseId"] for b in message["content"] if "toolResult" in b]
        if message["role"] == "user" and sorted(results) != sorted(pending_ids):
            raise Reject(
                400,
                "ValidationException",
                f"Expected toolResult blocks at messages.{i}.content for the "
                f"following Ids: {', '.join(pending_ids) or '(none)'}",
            )
        pending_ids = [b["toolUse"]["toolUseId"] for b in message["content"] if "toolUse" in b]
    _validate_tools(body.get("toolConfig"))
    thinking = (body.get("additionalModelRequestFields") or {}).get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024:
            raise Reject(400, "ValidationException", "thinking.budget_tokens: must be at least 1024")
        if (body.get("inferenceConfig") or {}).get("maxTokens", 4096) <= budget:
            raise Reject(400, "ValidationException", "The maximum tokens must be greater than thinking.budget_tokens.")
    return body


def _validate_block(block: dict[str, Any], where: str, role: str, body: dict[str, Any]) -> None:
    if "text" in block and not block["text"].strip():
        raise Reject(
            400,
            "ValidationException",
            f"The text field in the ContentBlock object at {where} is blank. "
            "Add text to the text field, and try again.",
        )
    if ("toolUse" in block or "toolResult" in block) and not body.get("toolConfig"):
        raise Reject(
            400,
            "ValidationException",
            "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
        )
    if ("toolUse" in block and role != "assistant") or ("toolResult" in block and role != "user"):
        raise Reject(400, "ValidationException", f"The content block at {where} is not allowed in a {role} message.")
    if "image" in block:
        image = block["image"]
        try:
            data = base64.b64decode(image["source"]["bytes"], validate=True)
        except (binascii.Error, KeyError, TypeError, ValueError):
            raise Reject(400, "ValidationException", f"Invalid base64 image bytes at {where}.") from None
        if not data.startswith(_IMAGE_MAGIC[image["format"]]):
            raise Reject(400, "ValidationException", f"The image at {where} is not a valid {image['format']} image.")


def _validate_tools(config: dict[str, Any] | None) -> None:
    if not config:
        return
    names = [tool["toolSpec"]["name"] for tool in config["tools"] if "toolSpec" in tool]
    if len(names) != len(set(names)):
        raise Reject(400, "ValidationException", "The toolConfig field contains duplicate tool names.")
    wanted = (config.get("toolChoice") or {}).get("tool", {}).get("name")
    if wanted is not None and wanted not in names:
        raise Reject(400, "ValidationException", f"The tool {wanted} named in toolChoice is not in toolConfig.tools.")


# ---------------------------------------------------------------------- deterministic answers


@dataclass
class Answer:
    blocks: list[dict[str, Any]]
    stop_reason: str
    usage: dict[str, int]

    def converse_body(self) -> dict[str, Any]:
        return {
            "output": {"message": {"role": "assistant", "content": self.blocks}},
            "stopReason": self.stop_reason,
            "usage": self.usage,
            "metrics": {"latencyMs": 1},
        }

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        events: list[tuple[str, dict[str, Any]]] = [("messageStart", {"role": "assistant"})]
        for index, block in enumerate(self.blocks):
            if "toolUse" in block:
                use = block["toolUse"]
                events.append(
                    (
                        "contentBlockStart",
                        {
                            "contentBlockIndex": index,
                            "start": {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}},
                        },
                    )
                )
                deltas = [{"toolUse": {"input": t}} for t in argument_fragments(use["input"])]
            elif "redactedContent" in block.get("reasoningContent", {}):
                deltas = [{"reasoningContent": block["reasoningContent"]}]
            elif "reasoningContent" in block:
                reasoning = block["reasoningContent"]["reasoningText"]
                deltas = [{"reasoningContent": {"text": t}} for t in reply_tokens(reasoning["text"])]
                deltas.append({"reasoningContent": {"signature": reasoning["signature"]}})
            else:
                deltas = [{"text": t} for t in reply_tokens(block["text"])]
            events.extend(("contentBlockDelta", {"contentBlockIndex": index, "delta": d}) for d in deltas)
            events.append(("contentBlockStop", {"contentBlockIndex": index}))
        events.append(("messageStop", {"stopReason": self.stop_reason}))
        events.append(("metadata", {"usage": self.usage, "metrics": {"latencyMs": 1}}))
        return events


def answer_for(body: dict[str, Any], script: BedrockScript, reply_text: str, seq: int) -> Answer:
    blocks: list[dict[str, Any]] = []
    output_tokens = 0
    if script.reasoning:
        signed = {"text": script.reasoning, "signature": REASONING_SIGNATURE}
        blocks.append({"reasoningContent": {"reasoningText": signed}})
        output_tokens += len(reply_tokens(script.reasoning))
        if script.redacted:
            blocks.append({"reasoningContent": {"redactedContent": REDACTED_DATA}})
    tool = _chosen_tool(body)
    if tool is not None:
        if script.preamble:
            blocks.append({"text": script.preamble})
            output_tokens += len(reply_tokens(script.preamble))
        arguments = orjson.loads(placeholder_arguments(tool["inputSchema"].get("json")))
        blocks.append({"toolUse": {"toolUseId": f"tooluse_fake{seq:06d}", "name": tool["name"], "input": arguments}})
        output_tokens += len(argument_fragments(arguments))
        stop_reason = "tool_use"
    else:
        config = body.get("inferenceConfig") or {}
        text, cut = apply_stop(
            script.reply_text if script.reply_text is not None else reply_text, config.get("stopSequences")
        )
        tokens, truncated = truncate_tokens(reply_tokens(text), config.get("maxTokens"))
        if tokens:
            blocks.append({"text": "".join(tokens)})
        output_tokens += len(tokens)
        stop_reason = "max_tokens" if truncated else "stop_sequence" if cut else "end_turn"
    usage = {
        "inputTokens": count_input_tokens(body),
        "outputTokens": output_tokens,
        "cacheReadInputTokens": 0,
        "cacheWriteInputTokens": 0,
        **script.usage_overrides,
    }
    usage["totalTokens"] = (
        usage["inputTokens"] + usage["outputTokens"] + usage["cacheReadInputTokens"] + usage["cacheWriteInputTokens"]
    )
    if not usage["cacheReadInputTokens"] and not usage["cacheWriteInputTokens"]:
        del usage["cacheReadInputTokens"], usage["cacheWriteInputTokens"]
    return Answer(blocks, script.stop_reason or stop_reason, usage)


def argument_fragments(arguments: Any) -> list[str]:
    """Compact JSON of a tool input in pieces of ``ARGUMENT_FRAGMENT_CHARS`` characters."""
    text = orjson.dumps(arguments).decode()
    return [text[i : i + ARGUMENT_FRAGMENT_CHARS] for i in range(0, len(text), ARGUMENT_FRAGMENT_CHARS)]


def _chosen_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    config = body.get("toolConfig")
    if not config or any("toolResult" in b for b in body["messages"][-1]["content"]):
        return None
    specs = [tool["toolSpec"] for tool in config["tools"] if "toolSpec" in tool]
    wanted = (config.get("toolChoice") or {}).get("tool", {}).get("name")
    return next((s for s in specs if s["name"] == wanted), specs[0] if specs else None)


def count_input_tokens(body: dict[str, Any]) -> int:
    """``chars // 4 + len(messages) + IMAGE_TOKENS * images`` (see the module docstring)."""
    chars = sum(len(block.get("text", "")) for block in body.get("system") or ())
    images = 0
    for message in body["messages"]:
        for block in message["content"]:
            if "text" in block:
                chars += len(block["text"])
            elif "toolUse" in block:
                chars += len(orjson.dumps(block["toolUse"]["input"]))
            elif "toolResult" in block:
                chars += sum(len(part.get("text", "")) for part in block["toolResult"]["content"])
            elif "image" in block:
                images += 1
    return chars // 4 + len(body["messages"]) + IMAGE_TOKENS * images


# ---------------------------------------------------------------------- the server


class FakeBedrockUpstream(FakeServer[BedrockScript]):
    """Fake Bedrock Runtime on ``127.0.0.1`` (ephemeral port unless ``port`` is given).

    ``session_token`` (when set) must be sent, signed, as ``X-Amz-Security-Token``;
    ``reply_text`` and ``session_token`` may be changed while running and are restored
    by :meth:`reset`.
    """

    label = "Bedrock"
    script_type = BedrockScript

    def __init__(
        self,
        *,
        access_key_id: str = DEFAULT_ACCESS_KEY_ID,
        secret_access_key: str = DEFAULT_SECRET_ACCESS_KEY,
        region: str = DEFAULT_REGION,
        session_token: str | None = None,
        reply_text: str = DEFAULT_REPLY_TEXT,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.region = region
        self.session_token = session_token
        self.reply_text = reply_text
        self._restore_on_reset("session_token", "reply_text")

    @property
    def secret(self) -> str:
        """The credential as Tallyhub stores it: ``ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]``."""
        parts = [self.access_key_id, self.secret_access_key] + ([self.session_token] if self.session_token else [])
        return ":".join(parts)

    def build_routes(self) -> list[web.RouteDef]:
        return [web.route("*", "/{tail:.*}", self._handle)]

    def _record_of(self, request: web.Request, body: bytes) -> BedrockRequest:
        raw_path = request.raw_path.partition("?")[0]
        parts = raw_path.split("/")
        model_id, operation = (unquote(parts[2]), parts[3]) if len(parts) == 4 and parts[1] == "model" else (None, None)
        return BedrockRequest(
            request.method,
            request.path,
            flat_headers(request),
            parse_json(body),
            body,
            dict(request.query),
            raw_path=raw_path,
            model_id=model_id,
            operation=operation,
        )

    @staticmethod
    def _error(status: int, error_type: str, message: str) -> web.Response:
        headers = {
            "x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            "x-amzn-RequestId": "fake-request-error",
        }
        return json_response({"message": message}, status, headers)

    # ------------------------------------------------------------------ SigV4

    def _verify_signature(self, request: web.Request, record: BedrockRequest) -> None:
        """Recompute the SigV4 signature with botocore from the request as received; raise Reject(403)."""
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            raise Reject(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        fields = dict(part.strip().split("=", 1) for part in auth[len("AWS4-HMAC-SHA256 ") :].split(",") if "=" in part)
        scope = fields.get("Credential", "").split("/")
        signed = fields.get("SignedHeaders", "").split(";")
        if len(scope) != 5 or not fields.get("Signature"):
            raise Reject(
                403,
                "IncompleteSignatureException",
                "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters.",
            )
        token = request.headers.get("X-Amz-Security-Token")
        if scope[0] != self.access_key_id or token != self.session_token:
            raise Reject(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
        if self.session_token and "x-amz-security-token" not in signed:
            raise Reject(403, "InvalidSignatureException", "'X-Amz-Security-Token' must be a signed header.")
        if "host" not in signed or "x-amz-date" not in signed:
            raise Reject(403, "InvalidSignatureException", "'Host' and 'X-Amz-Date' must be signed headers.")
        amz_date = request.headers.get("X-Amz-Date", "")
        try:
            when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise Reject(403, "IncompleteSignatureException", "Date must be in ISO-8601 'basic format'.") from None
        if abs((datetime.now(UTC) - when).total_seconds()) > MAX_CLOCK_SKEW_SECONDS:
            raise Reject(
                403,
                "InvalidSignatureException",
                f"Signature expired: {amz_date} is now earlier or later than the allowed 5 minutes.",
            )
        if scope[1] != amz_date[:8] or scope[2] != self.region or scope[3] != "bedrock" or scope[4] != "aws4_request":
            raise Reject(
                403,
                "InvalidSignatureException",
                f"Credential should be scoped to a valid region and to service 'bedrock': {'/'.join(scope[1:])}",
            )
        try:
            headers = {name: request.headers[name] for name in signed}
        except KeyError:
            raise Reject(403, "InvalidSignatureException", "A signed header is missing from the request.") from None
        query = request.raw_path.partition("?")[2]
        signing = AWSRequest(
            method=request.method,
            url=f"http://{headers['host']}{record.raw_path}" + (f"?{query}" if query else ""),
            data=record.body,
            headers=headers,
        )
        signing.context["timestamp"] = amz_date
        signer = SigV4Auth(
            Credentials(self.access_key_id, self.secret_access_key, self.session_token), "bedrock", self.region
        )
        expected = signer.signature(signer.string_to_sign(signing, signer.canonical_request(signing)), signing)
        if not hmac.compare_digest(expected, fields["Signature"]):
            raise Reject(
                403,
                "InvalidSignatureException",
                "The request signature we calculated does not match the "
                "signature you provided. Check your AWS Secret Access Key and signing method. Consult the "
                "service documentation for details.",
            )

    # ------------------------------------------------------------------ handlers

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        record = cast(BedrockRequest, request[RECORD_KEY])
        try:
            self._verify_signature(request, record)
        except Reject as rej:
            record.signature_valid, record.auth_error = False, rej.error_type
            return self._error(rej.status, rej.error_type, rej.message)
        record.signature_valid = True
        if request.method != "POST" or record.operation not in ("converse", "converse-stream", "invoke"):
            return self._error(404, "UnknownOperationException", "")
        script, seq = self._next_script(), request[SEQ_KEY]
        if script.delay_seconds:
            await asyncio.sleep(script.delay_seconds)
        if script.error_status is not None:
            return self._error(script.error_status, script.error_type, script.error_message)
        if script.drop:
            return drop_connection(request)
        try:
            if record.operation == "invoke":
                return self._invoke(record)
            body = validate_converse(record.json, record.model_id or "", record.operation)
        except Reject as rej:
            return self._error(rej.status, rej.error_type, rej.message)
        answer = answer_for(body, script, self.reply_text, seq)
        if record.operation == "converse":
            return json_response(answer.converse_body(), headers={"x-amzn-RequestId": f"fake-request-{seq:06d}"})
        return await self._stream(request, answer, script, seq)

    async def _stream(
        self, request: web.Request, answer: Answer, script: BedrockScript, seq: int
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/vnd.amazon.eventstream",
                "x-amzn-RequestId": f"fake-request-{seq:06d}",
            }
        )
        await response.prepare(request)
        for sent, (event_type, payload) in enumerate(answer.events()):
            message = _event(event_type, payload, sent)
            if sent == script.break_after:
                return drop_connection(request)
            if sent == script.exception_after:
                await response.write(_exception(script.exception_type, script.exception_message))
                break
            if sent == script.end_after:
                if script.partial_event:
                    await response.write(message[: len(message) // 2])
                break
            await response.write(message[:7])
            await response.write(message[7:])
        await response.write_eof()
        return response

    def _invoke(self, record: BedrockRequest) -> web.Response:
        body = record.json
        if "embed" not in (record.model_id or ""):
            raise Reject(400, "ValidationException", "The fake only serves Titan text embeddings models.")
        if not isinstance(body, dict):
            raise Reject(
                400, "ValidationException", "Malformed input request, please reformat your input and try again."
            )
        extra = set(body) - {"inputText", "dimensions", "normalize", "embeddingTypes"}
        if extra:
            raise Reject(
                400,
                "ValidationException",
                f"Malformed input request: extraneous key [{sorted(extra)[0]}] "
                "is not permitted, please reformat your input and try again.",
            )
        text, dimensions = body.get("inputText"), body.get("dimensions", 1024)
        if not isinstance(text, str) or not text:
            raise Reject(400, "ValidationException", "Malformed input request: inputText must be a non-empty string.")
        if dimensions not in (256, 512, 1024):
            raise Reject(400, "ValidationException", "Malformed input request: dimensions must be 256, 512 or 1024.")
        answer = {"embedding": embedding_vector(text, dimensions), "inputTextTokenCount": len(text) // 4 + 1}
        return json_response(answer)
