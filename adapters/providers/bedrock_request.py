"""OpenAI chat body → Bedrock Converse request body (``/model/{id}/converse[-stream]``).

Only what Converse can express is translated. Input that would change the answer if
dropped (``n > 1``, remote image URLs, audio, logprobs, ``json_object``) raises
``InvalidRequest`` before any network call; fields that only tune OpenAI's own service
(``user``, ``metadata``, ``store``, ``seed``, penalties, ``parallel_tool_calls``,
``stream_options``, ``service_tier``) are dropped.

Prompt caching and extended thinking (the chat body's conventions, adapters/providers/fidelity.py):
a ``cache_control`` mark → a ``cachePoint`` block (``{"type": "default"}``, with its ``ttl``)
right after the marked block, in ``system``, in a message's content (a message's own mark:
after its last block) or in ``toolConfig.tools``, for every model (Bedrock judges). For
Claude models (an id containing ``claude``) only: an assistant message's ``thinking_blocks``
→ ``reasoningContent`` blocks first in its turn (``reasoningText`` with its signature,
``redactedContent``), and the caller's ``thinking``, or else ``reasoning_effort`` (a budget
from fidelity.CLAUDE_BUDGETS within ``maxTokens``, DEFAULT_MAX_TOKENS when none is given,
refused as for Anthropic when it cannot fit or with a temperature other than 1, ``top_p``
outside 0.95–1 or a forced tool), → ``additionalModelRequestFields.thinking``. For other
models, thinking blocks, ``thinking`` and ``reasoning_effort`` are dropped.

Converse needs strictly alternating ``user``/``assistant`` turns, so consecutive
messages of one role (tool results included) are merged into one turn, and a
conversation that already holds tool calls always carries a ``toolConfig``.
"""

import base64
import binascii
import re
from typing import Any

import orjson

from adapters.providers.fidelity import cache_mark, claude_thinking, refuse_sampling_with_thinking, thinking_blocks
from domain.errors import InvalidRequest
from domain.pricing import DEFAULT_OUTPUT_CAP

IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
_DATA_URL = re.compile(r"^data:(?P<media>[^;,]+)(?P<params>(;[^;,]*)*),(?P<data>.*)$", re.DOTALL)
_REFUSED_FIELDS = {
    "audio": "audio output",
    "prediction": "predicted outputs",
    "functions": "the legacy 'functions' field (use 'tools')",
    "function_call": "the legacy 'function_call' field (use 'tool_choice')",
    "web_search_options": "web search",
}

Block = dict[str, Any]


def converse_request(body: dict[str, Any], model: str = "") -> dict[str, Any]:
    """The Converse body for an OpenAI chat body sent to ``model`` (the upstream model id);
    raises InvalidRequest for what Converse cannot say."""
    _refuse_unsupported(body)
    claude = "claude" in model.lower()
    system: list[Block] = []
    turns: list[tuple[str, list[Block]]] = []
    for index, message in enumerate(body.get("messages") or ()):
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_cached(_system_blocks(message.get("content"), index), message, f"messages.{index}"))
        elif role == "user":
            turns.append(("user", _cached(_user_blocks(message.get("content"), index), message, f"messages.{index}")))
        elif role == "assistant":
            blocks = _reasoning_blocks(message, index) if claude else []
            blocks += _cached(_assistant_blocks(message, index), message, f"messages.{index}")
            turns.append(("assistant", blocks))
        elif role == "tool":
            turns.append(("user", _cached([_tool_result(message, index)], message, f"messages.{index}")))
        else:
            raise InvalidRequest(
                f"messages[{index}].role {role!r} is not supported by Bedrock", param=f"messages.{index}.role"
            )
    request: dict[str, Any] = {"messages": _merged(turns)}
    if system:
        request["system"] = system
    inference = _inference_config(body)
    thinking = _thinking(body, inference) if claude else None
    if thinking is not None:
        request["additionalModelRequestFields"] = {"thinking": thinking}
    if inference:
        request["inferenceConfig"] = inference
    tool_config = _tool_config(body, request["messages"])
    if tool_config:
        request["toolConfig"] = tool_config
    output = _output_config(body.get("response_format"))
    if output:
        request["outputConfig"] = output
    return request


def _refuse_unsupported(body: dict[str, Any]) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        raise InvalidRequest("Bedrock models return one choice per request: 'n' must be 1", param="n")
    if body.get("logprobs") or body.get("top_logprobs") is not None:
        raise InvalidRequest("Bedrock does not return log probabilities", param="logprobs")
    for name, what in _REFUSED_FIELDS.items():
        if body.get(name) is not None:
            raise InvalidRequest(f"Bedrock does not support {what}", param=name)
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise InvalidRequest("Bedrock chat answers with text only", param="modalities")


# -------------------------------------------------------------------- caching and thinking


def _cache_point(mark: dict[str, Any]) -> Block:
    point: dict[str, Any] = {"type": "default"}
    if mark.get("ttl") is not None:
        point["ttl"] = mark["ttl"]
    return {"cachePoint": point}


def _cached(blocks: list[Block], message: dict[str, Any], where: str) -> list[Block]:
    """A message's own ``cache_control``: a cache point after its last block."""
    mark = cache_mark(message, where)
    return blocks + [_cache_point(mark)] if mark is not None and blocks else blocks


def _marked(block: Block, part: Any, where: str) -> list[Block]:
    """A block, then a cache point when its part carries ``cache_control``."""
    mark = cache_mark(part, where)
    return [block] if mark is None else [block, _cache_point(mark)]


def _reasoning_blocks(message: dict[str, Any], index: int) -> list[Block]:
    """An assistant message's ``thinking_blocks`` as Converse ``reasoningContent`` blocks."""
    blocks: list[Block] = []
    for block in thinking_blocks(message, f"messages.{index}"):
        if block["type"] == "thinking":
            text = {"text": block["thinking"], "signature": block["signature"]}
            blocks.append({"reasoningContent": {"reasoningText": text}})
        else:
            blocks.append({"reasoningContent": {"redactedContent": block["data"]}})
    return blocks


def _thinking(body: dict[str, Any], inference: dict[str, Any]) -> dict[str, Any] | None:
    """Claude's ``thinking`` within ``maxTokens`` (set to DEFAULT_MAX_TOKENS when thinking
    is asked for and the caller gave none: the cap the hold assumed)."""
    max_tokens = inference.get("maxTokens", DEFAULT_OUTPUT_CAP)
    thinking = claude_thinking(body, max_tokens, "Bedrock")
    refuse_sampling_with_thinking(body, thinking, "Bedrock")
    if thinking is not None:
        inference["maxTokens"] = max_tokens
    return thinking


# -------------------------------------------------------------------- messages


def _system_blocks(content: Any, index: int) -> list[Block]:
    if not isinstance(content, list):
        return [{"text": text} for text in _texts(content, index) if text]
    _texts(content, index)  # every part is a text part
    blocks: list[Block] = []
    for j, part in enumerate(content):
        if part["text"]:
            blocks.extend(_marked({"text": part["text"]}, part, f"messages.{index}.content.{j}"))
    return blocks


def _texts(content: Any, index: int) -> list[str]:
    """The text parts of a system/developer/tool message."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidRequest(
                    f"messages[{index}].content[{j}] must be a text part", param=f"messages.{index}.content.{j}"
                )
            texts.append(part["text"])
        return texts
    raise InvalidRequest(
        f"messages[{index}].content must be a string or an array of parts", param=f"messages.{index}.content"
    )


def _user_blocks(content: Any, index: int) -> list[Block]:
    if isinstance(content, str) or content is None:
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise InvalidRequest(
            f"messages[{index}].content must be a string or an array of parts", param=f"messages.{index}.content"
        )
    blocks: list[Block] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        where = f"messages.{index}.content.{j}"
        if kind == "text" and isinstance(part.get("text"), str):
            if part["text"]:
                blocks.extend(_marked({"text": part["text"]}, part, where))
        elif kind == "image_url":
            blocks.extend(_marked(_image_block(part.get("image_url"), where), part, where))
        else:
            raise InvalidRequest(
                f"messages[{index}].content[{j}]: Bedrock chat takes text and image parts, not {kind!r}",
                param=f"messages.{index}.content.{j}",
            )
    return blocks


def _image_block(image_url: Any, param: str) -> Block:
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str):
        raise InvalidRequest("image_url.url must be a string", param=param)
    match = _DATA_URL.match(url)
    if match is None:
        raise InvalidRequest(
            "Bedrock takes images inline only: send a base64 data: URL (png, jpeg, gif or webp), not a link",
            param=param,
        )
    media = match["media"].strip().lower()
    if media not in IMAGE_FORMATS:
        raise InvalidRequest(f"Bedrock takes png, jpeg, gif or webp images, not {media!r}", param=param)
    if "base64" not in match["params"].lower().split(";"):
        raise InvalidRequest("image data: URLs must be base64-encoded (data:image/png;base64,...)", param=param)
    data = "".join(match["data"].split())
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("the image data: URL is not valid base64", param=param) from None
    return {"image": {"format": IMAGE_FORMATS[media], "source": {"bytes": data}}}


def _assistant_blocks(message: dict[str, Any], index: int) -> list[Block]:
    content = message.get("content")
    blocks: list[Block] = []
    if isinstance(content, list):
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            text = part.get(kind) if kind in ("text", "refusal") else None
            if not isinstance(text, str):
                raise InvalidRequest(
                    f"messages[{index}].content[{j}] must be a text part", param=f"messages.{index}.content.{j}"
                )
            if text:
                blocks.extend(_marked({"text": text}, part, f"messages.{index}.content.{j}"))
    else:
        blocks = [{"text": text} for text in _texts(content, index) if text]
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise InvalidRequest(f"messages[{index}].tool_calls must be an array", param=f"messages.{index}.tool_calls")
    for j, call in enumerate(calls):
        where = f"messages.{index}.tool_calls.{j}"
        blocks.extend(_marked(_tool_use(call, where), call, where))
    return blocks


def _tool_use(call: Any, param: str) -> Block:
    function = call.get("function") if isinstance(call, dict) else None
    if not (isinstance(function, dict) and isinstance(call.get("id"), str) and isinstance(function.get("name"), str)):
        raise InvalidRequest("a tool call needs an id and a function name", param=param)
    arguments = function.get("arguments") or "{}"
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str) else arguments
    except orjson.JSONDecodeError:
        raise InvalidRequest("tool call arguments must be a JSON object", param=param) from None
    if not isinstance(parsed, dict):
        raise InvalidRequest("tool call arguments must be a JSON object", param=param)
    return {"toolUse": {"toolUseId": call["id"], "name": function["name"], "input": parsed}}


def _tool_result(message: dict[str, Any], index: int) -> Block:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(
            f"messages[{index}] (role 'tool') needs a tool_call_id", param=f"messages.{index}.tool_call_id"
        )
    text = "".join(_texts(message.get("content"), index))
    return {"toolResult": {"toolUseId": call_id, "content": [{"text": text}]}}


def _merged(turns: list[tuple[str, list[Block]]]) -> list[dict[str, Any]]:
    """Consecutive turns of one role become one message; empty turns disappear."""
    messages: list[dict[str, Any]] = []
    for role, blocks in turns:
        if not blocks:
            continue
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": list(blocks)})
    return messages


# -------------------------------------------------------------------- tools and settings


def _tool_config(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array", param="tools")
    specs = [block for i, tool in enumerate(tools) for block in _marked(_tool_spec(tool, i), tool, f"tools.{i}")]
    choice = body.get("tool_choice")
    if choice == "none" or not specs:
        # Converse has no "none"; but a history holding tool blocks must still declare tools.
        used = _used_tool_names(messages)
        if not used:
            return None
        return {"tools": specs or [_placeholder_spec(name) for name in used]}
    config: dict[str, Any] = {"tools": specs}
    if choice is not None:
        config["toolChoice"] = _tool_choice(choice)
    return config


def _tool_spec(tool: Any, index: int) -> Block:
    function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRequest("Bedrock takes function tools only, each with a name", param=f"tools.{index}")
    parameters = function.get("parameters")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    spec: Block = {"name": function["name"], "inputSchema": {"json": parameters}}
    if isinstance(function.get("description"), str) and function["description"]:
        spec["description"] = function["description"]
    return {"toolSpec": spec}


def _placeholder_spec(name: str) -> Block:
    return {"toolSpec": {"name": name, "inputSchema": {"json": {"type": "object", "properties": {}}}}}


def _used_tool_names(messages: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for message in messages:
        for block in message["content"]:
            if "toolUse" in block and block["toolUse"]["name"] not in names:
                names.append(block["toolUse"]["name"])
    if not names and any("toolResult" in b for m in messages for b in m["content"]):
        raise InvalidRequest("a tool message must answer a tool call of an earlier assistant message", param="messages")
    return names


def _tool_choice(choice: Any) -> Block:
    if choice == "auto":
        return {"auto": {}}
    if choice == "required":
        return {"any": {}}
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            return {"tool": {"name": name}}
    raise InvalidRequest("tool_choice must be 'none', 'auto', 'required' or a named function", param="tool_choice")


def _inference_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    limits = [body[name] for name in ("max_completion_tokens", "max_tokens") if body.get(name) is not None]
    if limits:
        config["maxTokens"] = min(limits)
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP")):
        value = body.get(ours)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidRequest(f"'{ours}' must be a number", param=ours)
        config[theirs] = value
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise InvalidRequest("'stop' must be a string or an array of strings", param="stop")
        if [s for s in stop if s]:
            config["stopSequences"] = [s for s in stop if s]
    return config


def _output_config(response_format: Any) -> dict[str, Any] | None:
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise InvalidRequest("response_format.json_schema.schema must be an object", param="response_format")
        definition: dict[str, Any] = {"schema": orjson.dumps(spec["schema"]).decode()}
        for name in ("name", "description"):
            if isinstance(spec.get(name), str):
                definition[name] = spec[name]
        return {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": definition}}}
    if kind == "json_object":
        raise InvalidRequest(
            "Bedrock cannot force free-form JSON; use response_format type 'json_schema'", param="response_format"
        )
    raise InvalidRequest("response_format.type must be 'text' or 'json_schema'", param="response_format")
