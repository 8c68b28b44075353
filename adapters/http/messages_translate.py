"""Anthropic's ``POST /v1/messages`` on the gateway: the caller's Messages request →
the gateway's OpenAI chat body, and the pipeline's OpenAI answer → Anthropic's wire
format (a ``message`` object, or named SSE events). Pure functions, no I/O. The
opposite direction, for the Anthropic *provider*, is ``adapters/providers/anthropic_*``.

Invariants:
- a request is translated without changing what it asks for, or refused with
  ``InvalidRequest`` (naming the field) before anything is routed or billed;
- usage is the provider's count in Anthropic's terms: ``input_tokens`` is the prompt
  *without* cache reads or writes, ``cache_read_input_tokens`` the reads,
  ``cache_creation_input_tokens`` the writes and ``cache_creation`` their split by TTL
  (``ephemeral_5m_input_tokens``, ``ephemeral_1h_input_tokens``; both only when there
  were writes): Anthropic's total
  input is their sum, as OpenAI's ``prompt_tokens`` was, so no count is ever negative.
  ``output_tokens`` is everything produced; ``server_tool_use.web_search_requests`` the
  web searches billed, when there were any. Counts the provider did not report (an
  OpenAI-family upstream reports no cache writes) are 0;
- a stream is ``message_start``, then content blocks numbered 0, 1, 2… each
  ``content_block_start`` / deltas / ``content_block_stop`` with one block open at a
  time, then ``message_delta`` (stop reason and the final usage) and ``message_stop``.
  OpenAI reports usage only at the end, so ``message_start`` says 0 tokens and
  ``message_delta.usage`` carries the real totals — including ``input_tokens`` and
  ``cache_creation_input_tokens``, which the ``anthropic`` SDK's accumulator takes over
  from it (not ``cache_creation``, the split by TTL: only the raw event has it).

Request, translated: ``system`` (string or text blocks) → a system message;
text / image (base64 → data URL; url) / PDF ``document`` (base64) blocks;
assistant ``tool_use`` → ``tool_calls``; user ``tool_result`` → ``role: tool``
messages, placed before the rest of that turn (``is_error`` → text prefixed with
TOOL_ERROR_PREFIX; text content only); ``tools`` → function tools; ``tool_choice``
(auto / any → required / tool → named function / none; ``disable_parallel_tool_use``
→ ``parallel_tool_calls: false``); ``max_tokens``; ``temperature``; ``top_p``;
``stop_sequences`` → ``stop``; ``stream`` (+ ``stream_options.include_usage``);
``metadata.user_id`` → ``user``; ``output_config.format`` json_schema →
``response_format``. Passed through untouched: ``top_k``, ``thinking``. Content of a
single unmarked text block becomes a plain string (what every provider accepts), several
stay parts. ``temperature`` is not range-checked here: the chosen provider decides (the
Anthropic provider keeps Anthropic's 0–1).
Prompt caching and extended thinking, in the chat body's conventions
(adapters/providers/fidelity.py): a block's ``cache_control`` (text, image, document,
``tool_use``, system text) → the same part's, tool call's or ``tools`` entry's
``cache_control``; a ``tool_result``'s → its tool message's; ``thinking`` /
``redacted_thinking`` blocks of earlier assistant turns → that message's
``thinking_blocks``, in order, unchanged. The Anthropic and Bedrock providers put them back
where they were; other providers drop them.
Dropped: ``citations``, and every other top-level field (``service_tier``, ``container``,
``context_management``, a top-level ``cache_control``, …).
Refused: server tools (web search, code execution, …), ``mcp_servers``, images in
tool results, other block types.

Answer: text → a ``text`` block; ``thinking_blocks`` (from the Anthropic and Bedrock
providers) → ``thinking`` blocks with their real ``signature`` and ``redacted_thinking``
blocks, streamed as ``thinking_delta``s then one ``signature_delta`` (a redacted block whole
in its ``content_block_start``); without them, ``reasoning_content`` (and its dialects) → a
``thinking`` block with an empty signature (another provider's reasoning: nothing can
verify it, and the Anthropic provider leaves such a block out when it is sent back);
``tool_calls`` → ``tool_use`` blocks (arguments that are not a JSON object → ``{}``).
``stop_reason``: stop → end_turn (stop_sequence when the provider names the matched
string, as vLLM does in ``choice.stop_reason``; tool_use when calls were made), length → max_tokens,
tool_calls → tool_use, content_filter or a ``refusal`` → refusal.
Tallyhub's charge, when the usage carries it, travels in an extra top-level
``tallyhub`` object (on the message, and on the stream's ``message_delta`` event).
An answer with no choice carrying a message, or with tool calls that are not a list, is
``MalformedUpstreamAnswer``: the provider's garbled answer, found before the call is charged
(``message_from_completion`` runs first, ``message_with_usage`` puts the charge in after).
"""

from typing import Any, TypeGuard

import orjson

from adapters.providers.anthropic_request import IMAGE_MEDIA_TYPES, PASSED_THROUGH
from adapters.providers.openai_family import reasoning_text, usage_from_openai_family
from domain.attribution import MAX_USER_CHARS
from domain.errors import InvalidRequest, MalformedUpstreamAnswer

Event = tuple[str, dict[str, Any]]  # (SSE event name, data)
TOOL_ERROR_PREFIX = "Error: "
# The fields receipts.receipt_usage adds to an OpenAI usage object.
RECEIPT_FIELDS = ("cost", "cost_decimal", "cost_nanocredits", "price_book_version", "usage_source", "price_missing")
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# Anthropic's error type per HTTP status; any other 4xx is invalid_request_error, 5xx api_error.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",  # Anthropic's own type for 402 (the SDK knows it): out of credits
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",  # the gateway or every upstream is unavailable for now: retry later
    504: "timeout_error",
    529: "overloaded_error",
}


# -- request ----------------------------------------------------------------------


def chat_body_from_messages(body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI chat-completions body for a Messages API request; raises InvalidRequest."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: a model id (string) is required", param="model")
    max_tokens = body.get("max_tokens")
    if not _is_int(max_tokens) or max_tokens < 1:
        raise InvalidRequest("max_tokens: a positive integer is required", param="max_tokens")
    if body.get("mcp_servers"):
        raise InvalidRequest("mcp_servers: MCP connectors are not available through Tallyhub", param="mcp_servers")
    messages = _system(body.get("system")) + _conversation(body.get("messages"))
    chat: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens}
    chat.update(_sampling(body))
    chat.update(_tools(body))
    response_format = _response_format(body.get("output_config"))
    if response_format is not None:
        chat["response_format"] = response_format
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("stream: must be a boolean", param="stream")
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    user = _user_id(body.get("metadata"))
    if user:
        chat["user"] = user
    chat.update({name: body[name] for name in PASSED_THROUGH if body.get(name) is not None})
    return chat


def _system(system: Any) -> list[dict[str, Any]]:
    if system is None or system == "":
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if not isinstance(system, list):
        raise InvalidRequest("system: must be a string or an array of text blocks", param="system")
    parts = [part for number, block in enumerate(system) for part in _text_part(block, f"system.{number}")]
    return [{"role": "system", "content": _collapsed(parts)}] if parts else []


def _marked(part: dict[str, Any], block: dict[str, Any]) -> dict[str, Any]:
    """``part`` with the block's ``cache_control``, as sent (the provider judges it)."""
    if block.get("cache_control") is None:
        return part
    return {**part, "cache_control": block["cache_control"]}


def _conversation(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: a non-empty array of messages is required", param="messages")
    chat: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        if not isinstance(message, dict):
            raise InvalidRequest(f"{where}: must be an object", param=where)
        role, content = message.get("role"), message.get("content")
        if role == "user":
            chat.extend(_user_messages(content, where))
        elif role == "assistant":
            chat.extend(_assistant_messages(content, where))
        else:
            raise InvalidRequest(f"{where}.role: must be 'user' or 'assistant', not {role!r}", param=f"{where}.role")
    return chat


def _blocks(content: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    """(path, block) for each block of a message's content array."""
    if not isinstance(content, list):
        raise InvalidRequest(
            f"{where}.content: must be a string or an array of content blocks", param=f"{where}.content"
        )
    blocks = []
    for number, block in enumerate(content):
        at = f"{where}.content.{number}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise InvalidRequest(f"{at}: a content block must be an object with a 'type'", param=at)
        blocks.append((at, block))
    return blocks


def _user_messages(content: Any, where: str) -> list[dict[str, Any]]:
    """Tool results first (OpenAI wants them right after the assistant's calls), then the rest."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for at, block in _blocks(content, where):
        kind = block["type"]
        if kind == "tool_result":
            results.append(_tool_message(block, at))
        elif kind == "text":
            parts.extend(_text_part(block, at))
        elif kind == "image":
            parts.append(_marked(_image_part(block.get("source"), at), block))
        elif kind == "document":
            parts.append(_marked(_file_part(block, at), block))
        else:
            raise InvalidRequest(f"{at}: a {kind!r} block cannot be sent in a user turn through Tallyhub", param=at)
    return results + ([{"role": "user", "content": _collapsed(parts)}] if parts else [])


def _assistant_messages(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "assistant", "content": content}]
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    thoughts: list[dict[str, Any]] = []
    for at, block in _blocks(content, where):
        kind = block["type"]
        if kind == "text":
            parts.extend(_text_part(block, at))
        elif kind == "tool_use":
            calls.append(_marked(_tool_call(block, at), block))
        elif kind in ("thinking", "redacted_thinking"):
            thoughts.append(_thinking_block(block, at))
        else:
            raise InvalidRequest(
                f"{at}: a {kind!r} block cannot be sent in an assistant turn through Tallyhub", param=at
            )
    if not parts and not calls:
        return []
    message: dict[str, Any] = {"role": "assistant", "content": _collapsed(parts) if parts else None}
    if calls:
        message["tool_calls"] = calls
    if thoughts:
        message["thinking_blocks"] = thoughts
    return [message]


def _thinking_block(block: dict[str, Any], at: str) -> dict[str, Any]:
    """An earlier turn's thinking as the chat body's ``thinking_blocks`` entry, unchanged."""
    if block["type"] == "redacted_thinking":
        if not isinstance(block.get("data"), str):
            raise InvalidRequest(f"{at}.data: a redacted_thinking block needs its 'data'", param=f"{at}.data")
        return {"type": "redacted_thinking", "data": block["data"]}
    if not isinstance(block.get("thinking"), str) or not isinstance(block.get("signature"), str):
        raise InvalidRequest(f"{at}: a thinking block needs 'thinking' and 'signature' strings", param=at)
    return {"type": "thinking", "thinking": block["thinking"], "signature": block["signature"]}


def _text_part(block: Any, at: str) -> list[dict[str, Any]]:
    """A text block as an OpenAI text part; empty text is omitted."""
    if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
        raise InvalidRequest(f"{at}: must be a text block with a string 'text'", param=at)
    return [_marked({"type": "text", "text": block["text"]}, block)] if block["text"] else []


def _collapsed(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """One unmarked text part as a plain string (what every provider accepts), else the parts."""
    plain = len(parts) == 1 and parts[0]["type"] == "text" and "cache_control" not in parts[0]
    return parts[0]["text"] if plain else parts


def _image_part(source: Any, at: str) -> dict[str, Any]:
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "url" and isinstance(source.get("url"), str) and source["url"]:
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    if kind == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if media_type not in IMAGE_MEDIA_TYPES:
            raise InvalidRequest(
                f"{at}.source.media_type: must be one of {', '.join(IMAGE_MEDIA_TYPES)}",
                param=f"{at}.source.media_type",
            )
        if not isinstance(data, str) or not data:
            raise InvalidRequest(f"{at}.source.data: base64 image data is required", param=f"{at}.source.data")
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    raise InvalidRequest(f"{at}.source: an image must be a base64 or url source", param=f"{at}.source")


def _file_part(block: dict[str, Any], at: str) -> dict[str, Any]:
    source = _object(block.get("source"))
    data = source.get("data")
    is_pdf = source.get("type") == "base64" and source.get("media_type") == "application/pdf"
    if not is_pdf or not isinstance(data, str) or not data:
        raise InvalidRequest(
            f"{at}.source: only base64 PDF documents can be sent through Tallyhub", param=f"{at}.source"
        )
    title = block.get("title")
    filename = title if isinstance(title, str) and title else "document.pdf"
    return {"type": "file", "file": {"filename": filename, "file_data": f"data:application/pdf;base64,{data}"}}


def _tool_call(block: dict[str, Any], at: str) -> dict[str, Any]:
    call_id, name, arguments = block.get("id"), block.get("name"), block.get("input")
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
        raise InvalidRequest(f"{at}: a tool_use block needs an 'id' and a 'name'", param=at)
    if not isinstance(arguments, dict):
        raise InvalidRequest(f"{at}.input: must be an object", param=f"{at}.input")
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
    }


def _tool_message(block: dict[str, Any], at: str) -> dict[str, Any]:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"{at}.tool_use_id: required", param=f"{at}.tool_use_id")
    content = block.get("content")
    if content is None or isinstance(content, str):
        text = content or ""
    elif isinstance(content, list):
        text = "\n".join(
            part["text"]
            for number, item in enumerate(content)
            for part in _tool_result_text(item, f"{at}.content.{number}")
        )
    else:
        raise InvalidRequest(f"{at}.content: must be a string or an array of text blocks", param=f"{at}.content")
    if block.get("is_error") is True:
        text = TOOL_ERROR_PREFIX + text if text else TOOL_ERROR_PREFIX.strip(": ")
    return _marked({"role": "tool", "tool_call_id": call_id, "content": text}, block)


def _tool_result_text(item: Any, at: str) -> list[dict[str, Any]]:
    if isinstance(item, dict) and item.get("type") == "image":
        raise InvalidRequest(
            f"{at}: images in tool results cannot be sent through Tallyhub (OpenAI's tool "
            "messages carry text only); put the image in a user text turn",
            param=at,
        )
    return _text_part(item, at)


def _sampling(body: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None:
            if not _is_number(value):
                raise InvalidRequest(f"{name}: must be a number", param=name)
            params[name] = value
    sequences = body.get("stop_sequences")
    if sequences is not None:
        if not isinstance(sequences, list) or not all(isinstance(s, str) for s in sequences):
            raise InvalidRequest("stop_sequences: must be an array of strings", param="stop_sequences")
        if any(sequences):
            params["stop"] = [s for s in sequences if s]
    return params


def _tools(body: dict[str, Any]) -> dict[str, Any]:
    """``tools`` and ``tool_choice``; a ``tool_choice`` without tools has nothing to choose and is dropped."""
    tools = body.get("tools")
    if not tools:
        return {}
    if not isinstance(tools, list):
        raise InvalidRequest("tools: must be an array", param="tools")
    params: dict[str, Any] = {"tools": [_function_tool(tool, f"tools.{number}") for number, tool in enumerate(tools)]}
    if body.get("tool_choice") is not None:
        params.update(_tool_choice(body["tool_choice"]))
    return params


def _function_tool(tool: Any, at: str) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise InvalidRequest(f"{at}: must be an object", param=at)
    if tool.get("type", "custom") not in ("custom", None):
        raise InvalidRequest(
            f"{at}.type: Anthropic server tool {tool['type']!r} is not available through Tallyhub; "
            "only client tools (name, description, input_schema) are",
            param=f"{at}.type",
        )
    name, schema = tool.get("name"), tool.get("input_schema")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{at}.name: required", param=f"{at}.name")
    if not isinstance(schema, dict):
        raise InvalidRequest(f"{at}.input_schema: a JSON schema object is required", param=f"{at}.input_schema")
    function: dict[str, Any] = {"name": name, "parameters": schema}
    if isinstance(tool.get("description"), str) and tool["description"]:
        function["description"] = tool["description"]
    if tool.get("strict") is True:
        function["strict"] = True
    return _marked({"type": "function", "function": function}, tool)


def _tool_choice(choice: Any) -> dict[str, Any]:
    kind = choice.get("type") if isinstance(choice, dict) else None
    kind = kind if isinstance(kind, str) else None  # any JSON may come here: {"type": {}} is not a kind
    named = {"auto": "auto", "any": "required", "none": "none"}
    if kind in named:
        params: dict[str, Any] = {"tool_choice": named[kind]}
    elif kind == "tool" and isinstance(choice.get("name"), str) and choice["name"]:
        params = {"tool_choice": {"type": "function", "function": {"name": choice["name"]}}}
    else:
        raise InvalidRequest("tool_choice: must be auto, any, none or {type: tool, name}", param="tool_choice")
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        params["parallel_tool_calls"] = False
    return params


def _response_format(output_config: Any) -> dict[str, Any] | None:
    output_format = output_config.get("format") if isinstance(output_config, dict) else None
    if output_format is None:
        return None
    if not (
        isinstance(output_format, dict)
        and output_format.get("type") == "json_schema"
        and isinstance(output_format.get("schema"), dict)
    ):
        raise InvalidRequest("output_config.format: must be {type: json_schema, schema}", param="output_config.format")
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": output_format["schema"]}}


def _user_id(metadata: Any) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise InvalidRequest("metadata: must be an object", param="metadata")
    user = metadata.get("user_id")
    if isinstance(user, str) and len(user) > MAX_USER_CHARS:  # checked here to name Anthropic's field
        raise InvalidRequest(f"metadata.user_id must be at most {MAX_USER_CHARS} characters", param="metadata.user_id")
    return user if isinstance(user, str) and user else None


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _object(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- answer -----------------------------------------------------------------------


def message_from_completion(completion: dict[str, Any], requested_model: str) -> dict[str, Any]:
    """An Anthropic ``message`` for a ``chat.completion`` (first choice), with the completion's
    usage; ``MalformedUpstreamAnswer`` (the provider's garbled answer) if it has no choice with a
    message, or tool calls that are not a list. The gateway translates before it charges, then
    puts the charged usage in with ``message_with_usage``."""
    choices = completion.get("choices") if isinstance(completion, dict) else None
    choice = _first_choice(choices)
    if choice is None or not isinstance(choice.get("message"), dict):
        raise MalformedUpstreamAnswer("the provider's answer has no choice to translate")
    reply, identity = choice["message"], message_id(completion.get("id"))
    content = _reply_blocks(reply, identity)
    has_tool_use = any(block["type"] == "tool_use" for block in content)
    finish = "content_filter" if _is_refusal(reply.get("refusal")) else choice.get("finish_reason")
    stop_reason, stop_sequence = _stop(finish, choice.get("stop_reason"), has_tool_use)
    message: dict[str, Any] = {
        "id": identity,
        "type": "message",
        "role": "assistant",
        "model": requested_model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
    }
    return message_with_usage(message, _object(completion.get("usage")))


def message_with_usage(message: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    """``message`` with an OpenAI usage object (any family dialect, with Tallyhub's receipt
    fields when it was charged) as its Anthropic ``usage`` and ``tallyhub`` charge. Never raises
    on an object: it is what follows the charge."""
    message["usage"] = anthropic_usage(usage)
    message.pop("tallyhub", None)
    receipt = tallyhub_receipt(usage)
    if receipt:
        message["tallyhub"] = receipt
    return message


def message_id(completion_id: Any) -> str:
    if not isinstance(completion_id, str) or not completion_id:
        return "msg_unknown"
    return completion_id if completion_id.startswith("msg_") else f"msg_{completion_id}"


def anthropic_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI usage (any family dialect) in Anthropic's terms; see the module invariants."""
    counted = usage_from_openai_family(usage)
    translated: dict[str, Any] = {
        "input_tokens": counted.uncached_input_tokens,
        "cache_read_input_tokens": counted.cached_input_tokens,
        "output_tokens": counted.output_tokens,
    }
    writes = counted.cache_write_5m_tokens + counted.cache_write_1h_tokens
    if writes:
        translated["cache_creation_input_tokens"] = writes
        translated["cache_creation"] = {
            "ephemeral_5m_input_tokens": counted.cache_write_5m_tokens,
            "ephemeral_1h_input_tokens": counted.cache_write_1h_tokens,
        }
    if counted.reasoning_tokens:
        translated["output_tokens_details"] = {"thinking_tokens": counted.reasoning_tokens}
    if counted.web_search_calls:
        translated["server_tool_use"] = {"web_search_requests": counted.web_search_calls}
    return translated


def tallyhub_receipt(usage: dict[str, Any]) -> dict[str, Any]:
    """Tallyhub's charge fields of a usage object; empty unless Tallyhub priced it
    (an upstream's own ``cost``, OpenRouter's, is not a Tallyhub charge)."""
    if "cost_nanocredits" not in usage:
        return {}
    return {name: usage[name] for name in RECEIPT_FIELDS if name in usage}


def _first_choice(choices: Any) -> dict[str, Any] | None:
    if not isinstance(choices, list):
        return None
    candidates = [c for c in choices if isinstance(c, dict)]
    return next((c for c in candidates if c.get("index", 0) == 0), candidates[0] if candidates else None)


def _reply_blocks(reply: dict[str, Any], identity: str) -> list[dict[str, Any]]:
    blocks = _answer_thinking(reply.get("thinking_blocks"))
    thinking = reasoning_text(reply)
    if thinking and not blocks:
        blocks.append({"type": "thinking", "thinking": thinking, "signature": ""})
    text = _reply_text(reply)
    if text:
        blocks.append({"type": "text", "text": text})
    calls = reply.get("tool_calls") or []
    if not isinstance(calls, list):
        raise MalformedUpstreamAnswer("the provider sent tool_calls that are not a list")
    for number, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            blocks.append(
                {
                    "type": "tool_use",
                    "id": _tool_use_id(call.get("id"), number, identity),
                    "name": str(function.get("name") or ""),
                    "input": _arguments(function.get("arguments")),
                }
            )
    return blocks


def _answer_thinking(blocks: Any) -> list[dict[str, Any]]:
    """An answer's ``thinking_blocks`` (the Anthropic and Bedrock providers send them, with
    signatures) as Anthropic content blocks; anything else in the list is skipped."""
    kept: list[dict[str, Any]] = []
    for block in blocks if isinstance(blocks, list) else ():
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "thinking":
            signature = block.get("signature")
            kept.append(
                {
                    "type": "thinking",
                    "thinking": str(block.get("thinking") or ""),
                    "signature": signature if isinstance(signature, str) else "",
                }
            )
        elif kind == "redacted_thinking" and isinstance(block.get("data"), str):
            kept.append({"type": "redacted_thinking", "data": block["data"]})
    return kept


def _reply_text(reply: dict[str, Any]) -> str:
    content = reply.get("content")
    if isinstance(content, list):
        content = "".join(
            str(part.get("text") or part.get("refusal") or "") for part in content if isinstance(part, dict)
        )
    text = content if isinstance(content, str) else ""
    refusal = reply.get("refusal")
    return text + refusal if _is_refusal(refusal) and refusal not in text else text


def _is_refusal(refusal: Any) -> TypeGuard[str]:
    """OpenAI's ``refusal``: the model declined (Anthropic's ``refusal`` stop reason)."""
    return isinstance(refusal, str) and bool(refusal)


def _arguments(arguments: Any) -> dict[str, Any]:
    """A call's JSON arguments as an object; {} when they are not one (the model's mistake, not ours)."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _tool_use_id(call_id: Any, index: int, message: str) -> str:
    return call_id if isinstance(call_id, str) and call_id else f"toolu_{message.removeprefix('msg_')}_{index}"


def _stop(finish_reason: Any, matched: Any, has_tool_use: bool) -> tuple[str, str | None]:
    """Anthropic's (stop_reason, stop_sequence). A stop is a stop sequence only when the
    provider names the matched string (vLLM-style ``choice.stop_reason``)."""
    if finish_reason in (None, "stop") and has_tool_use:
        return "tool_use", None
    if finish_reason == "stop" and isinstance(matched, str) and matched:
        return "stop_sequence", matched
    return (STOP_REASONS.get(finish_reason, "end_turn") if isinstance(finish_reason, str) else "end_turn"), None


# -- stream -----------------------------------------------------------------------


class MessagesStreamTranslator:
    """Turns ``chat.completion.chunk`` dicts, one at a time, into Anthropic stream events.

    Feed every chunk, the closing usage chunk included, then call ``finish()`` once the
    upstream finished normally; on a broken stream send ``error_event`` instead.
    """

    def __init__(self, requested_model: str) -> None:
        self.model = requested_model
        self.id = "msg_unknown"
        self.started = False
        self.finished = False
        self.blocks = 0  # content blocks started so far; the next one gets this index
        # the open block: ("text", 0), ("thinking", n), ("tool", block index) or ("redacted", block index)
        self.open: tuple[str, int] | None = None
        self.thoughts = 0  # thinking blocks ended (by their signature); the next thinking text starts a new one
        self.tool_blocks: dict[int, tuple[int, str]] = {}  # OpenAI tool call index → (content block index, id)
        self.finish_reason: Any = None
        self.matched_stop: Any = None
        self.usage: dict[str, Any] = {}
        self.refused = False

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        if self.finished or not isinstance(chunk, dict):
            return []
        events = [] if self.started else [self._message_start(chunk)]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choice = _first_choice(chunk.get("choices"))
        if choice is None:
            return events
        delta = _object(choice.get("delta"))
        thinking = reasoning_text(delta)
        if thinking:
            events += self._into(
                ("thinking", self.thoughts),
                {"type": "thinking", "thinking": "", "signature": ""},
                {"type": "thinking_delta", "thinking": thinking},
            )
        for block in _answer_thinking(delta.get("thinking_blocks")):
            events += self._thinking_ended(block)
        if _is_refusal(delta.get("refusal")):
            self.refused = True
        text = "".join(delta[key] for key in ("content", "refusal") if isinstance(delta.get(key), str))
        if text:
            events += self._into(("text", 0), {"type": "text", "text": ""}, {"type": "text_delta", "text": text})
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                events += self._tool_fragment(call)
        if choice.get("finish_reason") is not None:
            self.finish_reason = choice["finish_reason"]
            self.matched_stop = choice.get("stop_reason")
        return events

    def finish(self) -> list[Event]:
        """The closing events: the open block's stop, ``message_delta``, ``message_stop``."""
        if self.finished:
            return []
        events = [] if self.started else [self._message_start({})]
        events += self._close()
        finish = "content_filter" if self.refused else self.finish_reason
        stop_reason, stop_sequence = _stop(finish, self.matched_stop, bool(self.tool_blocks))
        message_delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
            "usage": anthropic_usage(self.usage),
        }
        receipt = tallyhub_receipt(self.usage)
        if receipt:
            message_delta["tallyhub"] = receipt
        self.finished = True
        return events + [("message_delta", message_delta), ("message_stop", {"type": "message_stop"})]

    def _message_start(self, chunk: dict[str, Any]) -> Event:
        self.started = True
        self.id = message_id(chunk.get("id"))
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return "message_start", {"type": "message_start", "message": message}

    def _thinking_ended(self, block: dict[str, Any]) -> list[Event]:
        """A whole thinking block (its text already streamed, if any) with its signature: the
        ``signature_delta`` that ends it; a redacted block whole, as Anthropic streams it."""
        if block["type"] == "redacted_thinking":
            return self._start(("redacted", self.blocks), block) + self._close()
        key = ("thinking", self.thoughts)
        events: list[Event] = []
        if self.open != key:  # nothing of it was streamed: it comes whole
            events += self._start(key, {"type": "thinking", "thinking": "", "signature": ""})
            if block["thinking"]:
                events.append(_block_delta(self.blocks - 1, {"type": "thinking_delta", "thinking": block["thinking"]}))
        if block["signature"]:
            events.append(_block_delta(self.blocks - 1, {"type": "signature_delta", "signature": block["signature"]}))
        self.thoughts += 1
        return events + self._close()

    def _tool_fragment(self, call: dict[str, Any]) -> list[Event]:
        index = call["index"] if _is_int(call.get("index")) else 0
        function = _object(call.get("function"))
        events: list[Event] = []
        known = self.tool_blocks.get(index)
        call_id = call.get("id")
        if known is None or (isinstance(call_id, str) and call_id and call_id != known[1]):
            # A new index, or a new id under a used index (relays that number every call 0).
            call_id = _tool_use_id(call_id, len(self.tool_blocks), self.id)
            block = {"type": "tool_use", "id": call_id, "name": str(function.get("name") or ""), "input": {}}
            events += self._start(("tool", self.blocks), block)
            known = self.tool_blocks[index] = (self.blocks - 1, call_id)
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            # A late fragment of a call whose block is already closed (no known provider
            # interleaves calls) still goes to that call's block, where the SDK adds it.
            delta = {"type": "input_json_delta", "partial_json": arguments}
            events.append(_block_delta(known[0], delta))
        return events

    def _into(self, key: tuple[str, int], block: dict[str, Any], delta: dict[str, Any]) -> list[Event]:
        events = [] if self.open == key else self._start(key, block)
        return events + [_block_delta(self.blocks - 1, delta)]

    def _start(self, key: tuple[str, int], block: dict[str, Any]) -> list[Event]:
        events = self._close()
        self.open = key
        self.blocks += 1
        return events + [
            ("content_block_start", {"type": "content_block_start", "index": self.blocks - 1, "content_block": block})
        ]

    def _close(self) -> list[Event]:
        if self.open is None:
            return []
        self.open = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self.blocks - 1})]


def _block_delta(index: int, delta: dict[str, Any]) -> Event:
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}


# -- errors and framing -----------------------------------------------------------


def error_event(message: str, type_: str = "api_error") -> Event:
    """A mid-stream failure, as Anthropic sends it (the SDK raises it as an APIStatusError)."""
    return "error", {"type": "error", "error": {"type": type_, "message": message}}


def anthropic_error_body(status: int, message: str) -> dict[str, Any]:
    """Anthropic's error document for a status (see ERROR_TYPES)."""
    type_ = ERROR_TYPES.get(status) or ("invalid_request_error" if 400 <= status < 500 else "api_error")
    return {"type": "error", "error": {"type": type_, "message": message}}


def sse_event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
