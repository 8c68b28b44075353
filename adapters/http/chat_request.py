"""Parsing and validating a chat-completions body. Only what Tallyhub needs is checked
(model, messages, stream, n, max tokens, stream_options, and that tools is an array of
objects, which every provider adapter iterates); every other field is left as the caller
sent it and passes through to OpenAI-compatible upstreams. ``user`` and ``metadata`` (still
passed through as sent) and the ``x-tallyhub-tags`` header are the request's attribution
(domain/attribution.py), refused here when over their bounds, before anything is held."""

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from adapters.http.bodies import with_model
from application.billing import RequestShape
from domain.attribution import TAGS_HEADER, Attribution, parse_attribution
from domain.bounds import MAX_TOKENS
from domain.errors import InvalidRequest
from domain.slots_init import slots_init

# A bound on the input tokens of one image part, used instead of its (base64) size
# when estimating the worst case: providers bill images by tiles, not bytes.
IMAGE_TOKEN_BOUND = 2000
MAX_CHOICES = 128


@slots_init  # one per request: domain/slots_init.py
@dataclass(frozen=True, slots=True)
class ChatRequest:
    body: dict[str, Any]
    shape: RequestShape
    wants_usage: bool  # the caller asked for stream_options.include_usage


def tags_header(request: Request) -> str | None:
    """The request's ``x-tallyhub-tags``, its repeats joined as one list (None: not sent)."""
    values = request.headers.getlist(TAGS_HEADER)
    return ",".join(values) if values else None


def parse_chat_request(raw: bytes, tags: str | None = None, endpoint: str = "chat.completions") -> ChatRequest:
    """The body ``raw`` and the request's tags header (``tags_header``); ``endpoint`` names the
    API the caller used (the request log's and the access log's route), for an ingress that
    translates its own format to a chat body (``messages``)."""
    body = with_model(raw)
    model = body["model"]
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest("missing required parameter: 'messages'", param="messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(f"messages[{index}] must be an object with a string 'role'", param=f"messages.{index}")
    tools = _optional(body, "tools", list, None)
    if tools is not None and not all(isinstance(tool, dict) for tool in tools):
        raise InvalidRequest("'tools' must be an array of objects", param="tools")
    stream = _optional(body, "stream", bool, False)
    choices = _optional(body, "n", int, 1)
    if not 1 <= choices <= MAX_CHOICES:
        raise InvalidRequest(f"'n' must be between 1 and {MAX_CHOICES}", param="n")
    max_tokens = _max_output_tokens(body)
    options = _optional(body, "stream_options", dict, None)
    wants_usage = bool(options and options.get("include_usage") is True)
    if options is not None and not stream:
        raise InvalidRequest("'stream_options' is only allowed when 'stream' is true", param="stream_options")
    shape = RequestShape(
        model=model,
        prompt_bytes=_prompt_bound(raw, messages),
        max_output_tokens=max_tokens,
        choices=choices,
        stream=stream,
        attribution=_attribution(body, tags),
        endpoint=endpoint,
    )
    return ChatRequest(body=body, shape=shape, wants_usage=wants_usage)


def _attribution(body: dict[str, Any], tags: str | None) -> Attribution | None:
    """``parse_attribution`` of the body's ``user`` and ``metadata`` and the tags header; None
    at once when none of them was sent (most requests), as ``parse_attribution`` would say."""
    user, metadata = body.get("user"), body.get("metadata")
    if user is None and metadata is None and tags is None:
        return None
    return parse_attribution(user, metadata, tags)


def _optional(body: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidRequest(f"'{name}' must be of type {kind.__name__}", param=name)
    return value


def _max_output_tokens(body: dict[str, Any]) -> int | None:
    given = []
    for name in ("max_completion_tokens", "max_tokens"):
        limit = _optional(body, name, int, None)
        if limit is None:
            continue
        if limit < 1:
            raise InvalidRequest("max tokens must be at least 1", param=name)
        if limit > MAX_TOKENS:  # no model outputs that much, and no count above it is stored
            raise InvalidRequest(f"'{name}' must be at most {MAX_TOKENS}", param=name)
        given.append(limit)
    return min(given) if given else None


def _prompt_bound(raw: bytes, messages: list[Any]) -> int:
    """Bytes of the body bound its input tokens; inline images count as IMAGE_TOKEN_BOUND each."""
    if b"image_url" not in raw:
        return len(raw)
    bound = len(raw)
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                url = (part.get("image_url") or {}).get("url", "") if isinstance(part.get("image_url"), dict) else ""
                bound += IMAGE_TOKEN_BOUND - len(url) if isinstance(url, str) else IMAGE_TOKEN_BOUND
    return max(bound, 1)
