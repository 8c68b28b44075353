"""OpenAI chat-completions request → Anthropic Messages request.

Invariant: a request is either translated without changing what it asks for, or
refused with ``InvalidRequest`` before any network call. Nothing is guessed.

Translated: ``messages`` (``system``/``developer`` → top-level ``system``; ``tool``
messages → ``tool_result`` blocks; consecutive turns of one role merged, because
Anthropic wants user and assistant to alternate), text / image / PDF content parts,
``tools``, ``tool_choice``, ``parallel_tool_calls: false``, ``max_tokens`` /
``max_completion_tokens`` (the smaller; DEFAULT_MAX_TOKENS when neither is given,
since Anthropic requires one), ``temperature`` (0–1 only), ``top_p``, ``stop``,
``stream``, ``user`` (→ ``metadata.user_id``), ``response_format`` ``json_schema``
(→ ``output_config.format``). Anthropic's own ``top_k`` and ``thinking`` pass through.
Prompt caching and extended thinking (the conventions of adapters/providers/fidelity.py):
``cache_control`` on a content part, a tool call, a ``tools`` entry or a whole message (its
last block) → the same block's ``cache_control``, as sent (a marked single text stays a
block; Anthropic judges the marks, at most 4); an assistant message's ``thinking_blocks``
→ its ``thinking`` / ``redacted_thinking`` blocks, first in the turn, unchanged (one with
an empty signature, another provider's reasoning, is left out); ``reasoning_effort`` →
``thinking: {type: enabled, budget_tokens}`` from fidelity.CLAUDE_BUDGETS, within
``max_tokens`` (an explicit ``thinking`` wins).

Refused: ``n`` > 1, ``logprobs``, audio output, ``response_format`` ``json_object``,
the legacy ``functions`` / ``function_call`` / ``role: function``, non-function
tools, audio and ``file_id`` parts; with thinking asked by ``reasoning_effort``, a
``temperature`` other than 1, ``top_k``, ``top_p`` outside 0.95–1 and a forced
``tool_choice`` (Anthropic's rules; a caller's own ``thinking`` is Anthropic's to judge),
and a ``reasoning_effort`` whose budget cannot fit under ``max_tokens``.

Dropped (they only tune OpenAI's sampling, storage or delivery): every other field,
notably ``frequency_penalty``, ``presence_penalty``, ``logit_bias``, ``seed``,
``top_logprobs``, ``stream_options`` (usage is always reported), ``store``,
``metadata``, ``service_tier``, ``prediction``, ``verbosity``,
``web_search_options``, ``prompt_cache_key``, ``safety_identifier``, and per-message
``name``, ``refusal`` and ``reasoning_content`` (the text alone cannot be replayed:
``thinking_blocks`` carry the signature); an image part's ``detail``.
Empty text is omitted (Anthropic rejects empty text blocks).
"""

import re
from typing import Any

import orjson

from adapters.providers.fidelity import cache_mark, claude_thinking, refuse_sampling_with_thinking, thinking_blocks
from domain.errors import InvalidRequest
from domain.pricing import DEFAULT_OUTPUT_CAP

# Anthropic requires max_tokens; without one from the caller, the cap the hold assumes.
DEFAULT_MAX_TOKENS = DEFAULT_OUTPUT_CAP
PASSED_THROUGH = ("top_k", "thinking")  # Anthropic's own knobs, for callers who know them
Block = dict[str, Any]
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_DATA_URL = re.compile(r"data:(?P<media_type>[\w.+-]+/[\w.+-]+)(?P<params>(;[^;,]*)*?);base64,(?P<data>.*)", re.DOTALL)


def messages_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The Messages API body for an OpenAI chat body; raises InvalidRequest."""
    _refuse_inexpressible(body)
    system, turns = _conversation(body.get("messages"))
    max_tokens = _max_tokens(body)
    thinking = claude_thinking(body, max_tokens, "Anthropic")
    refuse_sampling_with_thinking(body, thinking, "Anthropic")
    request: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": turns}
    if system is not None:
        request["system"] = system
    request.update(_sampling(body))
    request.update(_tools(body))
    output_format = _output_format(body.get("response_format"))
    if output_format is not None:
        request["output_config"] = {"format": output_format}
    if body.get("stream") is True:
        request["stream"] = True
    if isinstance(body.get("user"), str) and body["user"]:
        request["metadata"] = {"user_id": body["user"]}
    request.update({name: body[name] for name in PASSED_THROUGH if body.get(name) is not None})
    if thinking is not None:
        request["thinking"] = thinking
    return request


def _refuse_inexpressible(body: dict[str, Any]) -> None:
    if body.get("n") not in (None, 1):
        raise InvalidRequest("Anthropic models return one choice per request; 'n' must be 1", param="n")
    if body.get("logprobs") is True:
        raise InvalidRequest("Anthropic models do not return log probabilities", param="logprobs")
    if body.get("audio") is not None or "audio" in (body.get("modalities") or ()):
        raise InvalidRequest("Anthropic models do not produce audio", param="modalities")
    if body.get("functions") is not None or body.get("function_call") is not None:
        raise InvalidRequest(
            "'functions' and 'function_call' are deprecated; use 'tools' and 'tool_choice'", param="functions"
        )


# -- the conversation -------------------------------------------------------------


def _conversation(messages: Any) -> tuple[str | list[Block] | None, list[dict[str, Any]]]:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    system: list[Block] = []
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        if not isinstance(message, dict):
            raise InvalidRequest(f"{where} must be an object", param=where)
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_marked(_text_blocks(message.get("content"), where), message, where))
            continue
        if role == "user":
            _append(turns, "user", _marked(_user_blocks(message.get("content"), where), message, where))
        elif role == "assistant":
            _append(turns, "assistant", _marked(_assistant_blocks(message, where), message, where))
        elif role == "tool":
            _append(turns, "user", _marked([_tool_result(message, where)], message, where))
        else:
            raise InvalidRequest(f"{where}: role {role!r} cannot be sent to an Anthropic model", param=f"{where}.role")
    if not turns:
        raise InvalidRequest("Anthropic models need at least one user or assistant message", param="messages")
    return _system(system), [_finished(turn) for turn in turns]


def _append(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": list(blocks)})


def _finished(turn: dict[str, Any]) -> dict[str, Any]:
    """Tool results first in a user turn (Anthropic's rule); one plain unmarked text block as a string."""
    blocks = turn["content"]
    if turn["role"] == "user":
        blocks = [b for b in blocks if b["type"] == "tool_result"] + [b for b in blocks if b["type"] != "tool_result"]
    if _plain_text(blocks):
        return {"role": turn["role"], "content": blocks[0]["text"]}
    return {"role": turn["role"], "content": blocks}


def _plain_text(blocks: list[Block]) -> bool:
    return len(blocks) == 1 and blocks[0]["type"] == "text" and "cache_control" not in blocks[0]


def _system(blocks: list[Block]) -> str | list[Block] | None:
    if not blocks:
        return None
    return blocks[0]["text"] if _plain_text(blocks) else blocks


def _marked(blocks: list[Block], message: dict[str, Any], where: str) -> list[Block]:
    """A message's ``cache_control`` marks its last block (not a thinking block: those take none)."""
    mark = cache_mark(message, where)
    if mark is not None and blocks and blocks[-1]["type"] not in ("thinking", "redacted_thinking"):
        blocks[-1] = {**blocks[-1], "cache_control": mark}
    return blocks


def _with_mark(block: Block, part: Any, where: str) -> Block:
    mark = cache_mark(part, where)
    return {**block, "cache_control": mark} if mark is not None else block


def _text_blocks(content: Any, where: str) -> list[Block]:
    """The text blocks of a string or a list of text parts (system, developer, assistant and
    tool messages), each part's ``cache_control`` kept; empty text is left out."""
    if content is None:
        return []
    if isinstance(content, str):
        return _text_block(content)
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}.content must be a string or an array", param=f"{where}.content")
    blocks: list[Block] = []
    for number, part in enumerate(content):
        at = f"{where}.content.{number}"
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise InvalidRequest(f"{at}: only text parts are allowed here", param=at)
        blocks.extend(_with_mark(block, part, at) for block in _text_block(part["text"]))
    return blocks


def _text_block(text: str) -> list[Block]:
    return [{"type": "text", "text": text}] if text else []


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return _text_block(content)
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}.content must be a string or an array", param=f"{where}.content")
    blocks: list[dict[str, Any]] = []
    for number, part in enumerate(content):
        at = f"{where}.content.{number}"
        blocks.extend(_with_mark(block, part, at) for block in _user_part(part, at))
    return blocks


def _user_part(part: Any, where: str) -> list[dict[str, Any]]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text" and isinstance(part.get("text"), str):
        return _text_block(part["text"])
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        return [_image_block(url, where)]
    if kind == "file":
        return [_document_block(part.get("file"), where)]
    if kind == "input_audio":
        raise InvalidRequest(f"{where}: Anthropic models do not accept audio input", param=where)
    raise InvalidRequest(f"{where}: content part type {kind!r} cannot be sent to an Anthropic model", param=where)


def _image_block(url: Any, where: str) -> dict[str, Any]:
    if not isinstance(url, str):
        raise InvalidRequest(f"{where}.image_url.url must be a string", param=f"{where}.image_url.url")
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    media_type, data = _data_url(url, where)
    if media_type not in IMAGE_MEDIA_TYPES:
        raise InvalidRequest(
            f"{where}: Anthropic models accept {', '.join(IMAGE_MEDIA_TYPES)} images, not {media_type}",
            param=f"{where}.image_url.url",
        )
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _document_block(file: Any, where: str) -> dict[str, Any]:
    data_url = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data_url, str):
        raise InvalidRequest(
            f"{where}: only inline PDF files (file_data) can be sent to an Anthropic model", param=f"{where}.file"
        )
    media_type, data = _data_url(data_url, where)
    if media_type != "application/pdf":
        raise InvalidRequest(f"{where}: Anthropic models accept PDF files, not {media_type}", param=f"{where}.file")
    return {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _data_url(url: str, where: str) -> tuple[str, str]:
    match = _DATA_URL.fullmatch(url)
    if match is None:
        raise InvalidRequest(f"{where}: expected an http(s) URL or a base64 data: URL", param=where)
    return match["media_type"].lower(), match["data"]


def _assistant_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    if message.get("function_call") is not None:
        raise InvalidRequest(
            f"{where}: 'function_call' is deprecated; use 'tool_calls'", param=f"{where}.function_call"
        )
    content = message.get("content")
    if isinstance(content, list):  # a refusal the assistant gave is what it said
        content = [{"type": "text", "text": part.get("refusal")} if _is_refusal(part) else part for part in content]
    blocks = thinking_blocks(message, where) + _text_blocks(content, where)  # thinking first: Anthropic's rule
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise InvalidRequest(f"{where}.tool_calls must be an array", param=f"{where}.tool_calls")
    for number, call in enumerate(calls):
        at = f"{where}.tool_calls.{number}"
        blocks.append(_with_mark(_tool_use(call, at), call, at))
    return blocks


def _is_refusal(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "refusal"


def _tool_use(call: Any, where: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or call.get("type", "function") != "function":
        raise InvalidRequest(f"{where} must be a function call", param=where)
    if not isinstance(call.get("id"), str) or not isinstance(function.get("name"), str):
        raise InvalidRequest(f"{where} needs an 'id' and a 'function.name'", param=where)
    arguments = function.get("arguments") or "{}"
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str) else None
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise InvalidRequest(
            f"{where}.function.arguments must be a JSON object, as Anthropic models need it parsed",
            param=f"{where}.function.arguments",
        )
    return {"type": "tool_use", "id": call["id"], "name": function["name"], "input": parsed}


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"{where}: a tool message needs 'tool_call_id'", param=f"{where}.tool_call_id")
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            result["content"] = content
    else:
        blocks = _text_blocks(content, where)
        if blocks:
            result["content"] = blocks
    return result


# -- parameters -------------------------------------------------------------------


def _max_tokens(body: dict[str, Any]) -> int:
    given: list[int] = []
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidRequest("max tokens must be a positive integer", param="max_tokens")
        given.append(value)
    return min(given) if given else DEFAULT_MAX_TOKENS


def _sampling(body: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    temperature = body.get("temperature")
    if temperature is not None:
        if not _is_number(temperature) or not 0 <= temperature <= 1:
            raise InvalidRequest("Anthropic models accept a temperature between 0 and 1", param="temperature")
        params["temperature"] = temperature
    if body.get("top_p") is not None:
        params["top_p"] = body["top_p"]
    stop = body.get("stop")
    if stop is not None:
        sequences = [stop] if isinstance(stop, str) else stop
        if not isinstance(sequences, list) or not all(isinstance(s, str) for s in sequences):
            raise InvalidRequest("'stop' must be a string or an array of strings", param="stop")
        if any(sequences):
            params["stop_sequences"] = [s for s in sequences if s]
    return params


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _tools(body: dict[str, Any]) -> dict[str, Any]:
    """``tools`` and ``tool_choice``; a ``tool_choice`` without tools has nothing to choose and is dropped."""
    tools = body.get("tools")
    if not tools:
        return {}
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array", param="tools")
    params: dict[str, Any] = {"tools": [_tool(tool, f"tools.{number}") for number, tool in enumerate(tools)]}
    choice = _tool_choice(body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False and (choice is None or choice["type"] != "none"):
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice is not None:
        params["tool_choice"] = choice
    return params


def _tool(tool: Any, where: str) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict) or tool.get("type") != "function":
        raise InvalidRequest(f"{where}: only function tools can be sent to an Anthropic model", param=f"{where}.type")
    if not isinstance(function.get("name"), str):
        raise InvalidRequest(f"{where}.function.name must be a string", param=f"{where}.function.name")
    schema = function.get("parameters") or {}
    if not isinstance(schema, dict):
        raise InvalidRequest(
            f"{where}.function.parameters must be a JSON schema object", param=f"{where}.function.parameters"
        )
    translated: dict[str, Any] = {"name": function["name"], "input_schema": {"type": "object", **schema}}
    if isinstance(function.get("description"), str) and function["description"]:
        translated["description"] = function["description"]
    if function.get("strict") is True:
        translated["strict"] = True
    return _with_mark(translated, tool, where)


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    named = {"auto": "auto", "none": "none", "required": "any"}
    if isinstance(choice, str) and choice in named:
        return {"type": named[choice]}
    function = choice.get("function") if isinstance(choice, dict) and choice.get("type") == "function" else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return {"type": "tool", "name": function["name"]}
    raise InvalidRequest("'tool_choice' must be auto, none, required or a named function", param="tool_choice")


def _output_format(response_format: Any) -> dict[str, Any] | None:
    kind = response_format.get("type") if isinstance(response_format, dict) else response_format
    if kind in (None, "text"):
        return None
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
            return {"type": "json_schema", "schema": spec["schema"]}
        raise InvalidRequest(
            "'response_format.json_schema.schema' must be a JSON schema object", param="response_format"
        )
    if kind == "json_object":
        raise InvalidRequest(
            "Anthropic models cannot be asked for arbitrary JSON; use response_format json_schema",
            param="response_format",
        )
    raise InvalidRequest(f"response_format type {kind!r} is not supported", param="response_format")
