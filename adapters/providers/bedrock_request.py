"""OpenAI chat body → Bedrock Converse request body (``/model/{id}/converse[-stream]``).

Only what Converse can express is translated. Input that would change the answer if
dropped (``n > 1``, remote image URLs, audio, logprobs, ``json_object``) raises
``InvalidRequest`` before any network call; fields that only tune OpenAI's own service
(``user``, ``metadata``, ``store``, ``seed``, penalties, ``parallel_tool_calls``,
``stream_options``, ``service_tier``, ``reasoning_effort``) are dropped.

Converse needs strictly alternating ``user``/``assistant`` turns, so consecutive
messages of one role (tool results included) are merged into one turn, and a
conversation that already holds tool calls always carries a ``toolConfig``.
"""

import base64
import binascii
import re
from typing import Any

import orjson

from domain.errors import InvalidRequest

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


def converse_request(body: dict[str, Any]) -> dict[str, Any]:
    """The Converse body for an OpenAI chat body; raises InvalidRequest for what Converse cannot say."""
    _refuse_unsupported(body)
    system: list[Block] = []
    turns: list[tuple[str, list[Block]]] = []
    for index, message in enumerate(body.get("messages") or ()):
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend({"text": text} for text in _texts(message.get("content"), index) if text)
        elif role == "user":
            turns.append(("user", _user_blocks(message.get("content"), index)))
        elif role == "assistant":
            turns.append(("assistant", _assistant_blocks(message, index)))
        elif role == "tool":
            turns.append(("user", [_tool_result(message, index)]))
        else:
            raise InvalidRequest(
                f"messages[{index}].role {role!r} is not supported by Bedrock", param=f"messages.{index}.role"
            )
    request: dict[str, Any] = {"messages": _merged(turns)}
    if system:
        request["system"] = system
    inference = _inference_config(body)
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


# -------------------------------------------------------------------- messages


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
        if kind == "text" and isinstance(part.get("text"), str):
            if part["text"]:
                blocks.append({"text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image_block(part.get("image_url"), f"messages.{index}.content.{j}"))
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
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            text = part.get(kind) if kind in ("text", "refusal") else None
            if not isinstance(text, str):
                raise InvalidRequest(
                    f"messages[{index}].content[{j}] must be a text part", param=f"messages.{index}.content.{j}"
                )
            texts.append(text)
    else:
        texts = _texts(content, index)
    blocks: list[Block] = [{"text": text} for text in texts if text]
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise InvalidRequest(f"messages[{index}].tool_calls must be an array", param=f"messages.{index}.tool_calls")
    blocks.extend(_tool_use(call, f"messages.{index}.tool_calls.{j}") for j, call in enumerate(calls))
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
    specs = [_tool_spec(tool, i) for i, tool in enumerate(tools)]
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
