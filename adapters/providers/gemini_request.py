"""OpenAI chat request → Gemini ``GenerateContentRequest``.

Invariant: a request is either translated faithfully or refused with
``InvalidRequest`` naming the offending field — before any network call. Nothing
the caller asked for is silently changed into something else; only fields with no
effect on the answer (``user``, ``metadata``, ``store``, ``stream_options``, …) are
dropped.

``reasoning_effort`` → ``generationConfig.thinkingConfig.thinkingBudget`` from
fidelity.GEMINI_BUDGETS (``none`` → 0, thinking off where the model allows it), never above
the caller's max tokens. Anthropic's conventions (adapters/providers/fidelity.py) are dropped:
``cache_control`` marks (Gemini caches implicitly) and ``thinking_blocks`` (another
provider's signed reasoning, which Gemini cannot read).
"""

import base64
import binascii
from typing import Any

import orjson

from adapters.providers.fidelity import GEMINI_BUDGETS, reasoning_effort
from domain.errors import InvalidRequest

# A functionCall replayed without the signature Gemini issued: Google documents this
# value for histories it did not generate (Gemini 3 otherwise answers 400).
SKIP_SIGNATURE = "skip_thought_signature_validator"

# Fields that change the answer and that Gemini cannot express.
_UNSUPPORTED = {
    "audio": "audio output",
    "prediction": "predicted outputs",
    "web_search_options": "web search",
    "functions": "the deprecated 'functions' (use 'tools')",
    "function_call": "the deprecated 'function_call' (use 'tool_choice')",
}
_AUDIO_FORMATS = {"wav": "audio/wav", "mp3": "audio/mp3"}


def gemini_request(body: dict[str, Any]) -> dict[str, Any]:
    """The Gemini request for an OpenAI chat body; raises InvalidRequest."""
    _refuse_unsupported(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise InvalidRequest("'messages' must be a list of message objects", param="messages")
    system, contents = _contents(messages)
    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": system}
    tools = body.get("tools")
    if tools:
        request["tools"] = [{"functionDeclarations": [_declaration(i, tool) for i, tool in enumerate(tools)]}]
    tool_config = _tool_config(body.get("tool_choice"), tools or [])
    if tool_config:
        request["toolConfig"] = tool_config
    config = generation_config(body)
    if config:
        request["generationConfig"] = config
    return request


def candidate_count(body: dict[str, Any]) -> int:
    return int(body.get("n") or 1)


def _refuse_unsupported(body: dict[str, Any]) -> None:
    for name, what in _UNSUPPORTED.items():
        if body.get(name) is not None:
            raise InvalidRequest(f"Gemini does not support {what}; remove '{name}'", param=name)
    if body.get("logit_bias"):
        raise InvalidRequest("Gemini does not support 'logit_bias'", param="logit_bias")
    if body.get("logprobs") or body.get("top_logprobs") is not None:
        raise InvalidRequest("log probabilities are not available through this Gemini adapter", param="logprobs")
    if body.get("parallel_tool_calls") is False:
        raise InvalidRequest(
            "Gemini cannot be told to avoid parallel tool calls; remove 'parallel_tool_calls'",
            param="parallel_tool_calls",
        )
    modalities = body.get("modalities")
    if modalities is not None and list(modalities) != ["text"]:
        raise InvalidRequest("only text output is supported for Gemini", param="modalities")


# ---------------------------------------------------------------------- messages


def _contents(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """System parts, and the conversation as alternating user/model contents."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}  # tool call id → function name, from earlier assistant turns
    for index, message in enumerate(messages):
        role = message.get("role")
        where = f"messages.{index}"
        if role in ("system", "developer"):
            system.extend(_text_parts(message.get("content"), where))
            continue
        if role == "user":
            turn_role, parts = "user", _user_parts(message.get("content"), where)
        elif role == "assistant":
            turn_role, parts = "model", _assistant_parts(message, where, call_names)
        elif role == "tool":
            turn_role, parts = "user", [_function_response(message, where, call_names)]
        else:
            raise InvalidRequest(f"{where}: role {role!r} is not supported for Gemini", param=where)
        if not parts:
            continue
        if contents and contents[-1]["role"] == turn_role:
            contents[-1]["parts"].extend(parts)  # Gemini wants turns to alternate
        else:
            contents.append({"role": turn_role, "parts": parts})
    if not contents:
        raise InvalidRequest("Gemini needs at least one user message besides system messages", param="messages")
    return system, contents


def _text_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}]
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}.content must be a string or a list of parts", param=where)
    parts = []
    for i, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
            raise InvalidRequest(f"{where}.content.{i}: only text parts are allowed here", param=f"{where}.content.{i}")
        parts.append({"text": str(part.get("text") if part["type"] == "text" else part.get("refusal") or "")})
    return parts


def _user_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return _text_parts(content, where)
    return [_user_part(part, f"{where}.content.{i}") for i, part in enumerate(content)]


def _user_part(part: Any, where: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        return {"text": str(part.get("text") or "")}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        return _inline_data(url, where, "image")
    if kind == "input_audio":
        audio = part.get("input_audio") or {}
        mime = _AUDIO_FORMATS.get(str(audio.get("format")))
        if mime is None:
            raise InvalidRequest(f"{where}: audio format must be one of {', '.join(_AUDIO_FORMATS)}", param=where)
        return {"inlineData": {"mimeType": mime, "data": _base64(audio.get("data"), where)}}
    if kind == "file":
        file = part.get("file") or {}
        if not file.get("file_data"):
            raise InvalidRequest(
                f"{where}: Gemini needs the file inline as 'file_data' (a data: URL); "
                "uploaded file ids are not available",
                param=where,
            )
        return _inline_data(file["file_data"], where, "file")
    raise InvalidRequest(f"{where}: content part type {kind!r} is not supported for Gemini", param=where)


def _inline_data(url: Any, where: str, what: str) -> dict[str, Any]:
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"{where}: the {what} needs a URL", param=where)
    if url.startswith(("http://", "https://")):
        raise InvalidRequest(
            f"{where}: Gemini cannot be given an {what} by http(s) URL through this gateway; "
            f"send it inline as a data: URL (data:<mime type>;base64,<data>)",
            param=where,
        )
    header, sep, data = url.partition(",")
    if not url.startswith("data:") or not sep or not header.endswith(";base64"):
        raise InvalidRequest(f"{where}: the {what} must be a base64 data: URL", param=where)
    mime = header[len("data:") : -len(";base64")]
    if "/" not in mime:
        raise InvalidRequest(f"{where}: the data: URL has no MIME type", param=where)
    return {"inlineData": {"mimeType": mime, "data": _base64(data, where)}}


def _base64(data: Any, where: str) -> str:
    if not isinstance(data, str) or not data:
        raise InvalidRequest(f"{where}: missing base64 data", param=where)
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{where}: the data is not valid base64", param=where) from None
    return data


def _assistant_parts(message: dict[str, Any], where: str, call_names: dict[str, str]) -> list[dict[str, Any]]:
    parts = [part for part in _text_parts(message.get("content"), where) if part["text"]]
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise InvalidRequest(f"{where}.tool_calls: must be an array", param=f"{where}.tool_calls")
    for i, call in enumerate(calls):
        at = f"{where}.tool_calls.{i}"
        function = _dict(_dict(call).get("function"))
        name = function.get("name")
        if _dict(call).get("type", "function") != "function" or not isinstance(name, str):
            raise InvalidRequest(f"{at}: only function tool calls with a name can be sent to Gemini", param=at)
        part: dict[str, Any] = {"functionCall": {"name": name, "args": _arguments(function.get("arguments"), at)}}
        signature = _dict(_dict(call.get("extra_content")).get("google")).get("thought_signature")
        if signature or i == 0:  # Gemini validates the first call of each step
            part["thoughtSignature"] = signature or SKIP_SIGNATURE
        parts.append(part)
        if call.get("id"):
            call_names[str(call["id"])] = name
    return parts


def _arguments(arguments: Any, where: str) -> dict[str, Any]:
    if arguments in (None, ""):
        return {}
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str) else arguments
    except orjson.JSONDecodeError:
        raise InvalidRequest(f"{where}.function.arguments is not valid JSON", param=where) from None
    if not isinstance(parsed, dict):
        raise InvalidRequest(f"{where}.function.arguments must be a JSON object for Gemini", param=where)
    return parsed


def _function_response(message: dict[str, Any], where: str, call_names: dict[str, str]) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    name = call_names.get(str(call_id))
    if name is None:
        raise InvalidRequest(
            f"{where}: tool_call_id {call_id!r} matches no earlier assistant tool call "
            "(Gemini needs the function's name)",
            param=where,
        )
    text = "".join(part["text"] for part in _text_parts(message.get("content"), where))
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    response = parsed if isinstance(parsed, dict) else {"output": text}
    return {"functionResponse": {"name": name, "response": response}}


# ---------------------------------------------------------------------- tools


def _declaration(index: int, tool: Any) -> dict[str, Any]:
    where = f"tools.{index}"
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
        raise InvalidRequest(f"{where}: only function tools are supported for Gemini", param=where)
    function = tool["function"]
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{where}: the function needs a name", param=where)
    declaration: dict[str, Any] = {"name": name}
    if function.get("description"):
        declaration["description"] = str(function["description"])
    if function.get("parameters") is not None:
        parameters = gemini_schema(function["parameters"], f"tool {name!r} parameters", where)
        if parameters.get("type") != "OBJECT" or parameters.get("properties") or parameters.get("anyOf"):
            declaration["parameters"] = parameters  # Gemini refuses an OBJECT without properties
    return declaration


def _tool_config(choice: Any, tools: list[Any]) -> dict[str, Any] | None:
    if choice is None:
        return None
    names = [_dict(_dict(tool).get("function")).get("name") for tool in tools]
    if choice in ("auto", "none", "required"):
        if not tools and choice != "none":
            raise InvalidRequest(f"tool_choice {choice!r} needs 'tools'", param="tool_choice")
        if not tools:
            return None
        return {"functionCallingConfig": {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY"}[choice]}}
    if isinstance(choice, dict) and choice.get("type") == "function":
        wanted = [_dict(choice.get("function")).get("name")]
    elif isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = _dict(choice.get("allowed_tools"))
        if allowed.get("mode") != "required":
            raise InvalidRequest(
                "Gemini can restrict the allowed tools only when a call is required", param="tool_choice"
            )
        listed = allowed.get("tools") or []
        if not isinstance(listed, list):
            raise InvalidRequest("tool_choice.allowed_tools.tools must be an array", param="tool_choice")
        wanted = [_dict(_dict(tool).get("function")).get("name") for tool in listed]
    else:
        raise InvalidRequest("tool_choice must be 'auto', 'none', 'required' or name a function", param="tool_choice")
    for name in wanted:
        if name not in names:
            raise InvalidRequest(f"tool_choice names {name!r}, which is not among the tools", param="tool_choice")
    return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": wanted}}


# ---------------------------------------------------------------------- schemas

_TYPES = {
    "string": "STRING",
    "number": "NUMBER",
    "integer": "INTEGER",
    "boolean": "BOOLEAN",
    "array": "ARRAY",
    "object": "OBJECT",
    "null": "NULL",
}
# Keywords of Gemini's Schema (an OpenAPI 3.0 subset) passed on unchanged.
_KEPT = frozenset(
    {
        "description",
        "format",
        "title",
        "nullable",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "minProperties",
        "maxProperties",
        "minimum",
        "maximum",
        "pattern",
        "default",
        "example",
        "propertyOrdering",
        "required",
    }
)
# Annotations with no effect on what is generated.
_DROPPED = frozenset({"$schema", "$id", "$comment", "examples", "deprecated", "readOnly", "writeOnly"})


def gemini_schema(schema: Any, owner: str, param: str, path: str = "#") -> dict[str, Any]:
    """JSON Schema → Gemini Schema; InvalidRequest naming ``owner`` for what it cannot express."""
    if not isinstance(schema, dict):
        raise InvalidRequest(f"{owner}: the schema at {path} must be an object", param=param)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        at = f"{path}/{key}"
        if key in _DROPPED or (key == "additionalProperties" and isinstance(value, bool)):
            continue  # Gemini only ever fills the declared properties
        if key in _KEPT:
            out[key] = value
        elif key == "type":
            out.update(_schema_type(value, owner, param, at))
        elif key == "enum" or key == "const":
            values = value if key == "enum" else [value]
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise InvalidRequest(f"{owner}: '{key}' at {at} must hold strings only for Gemini", param=param)
            out["enum"] = values
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: gemini_schema(sub, owner, param, f"{at}/{name}") for name, sub in value.items()}
        elif key == "items" and isinstance(value, dict):
            out[key] = gemini_schema(value, owner, param, at)
        elif key == "anyOf" and isinstance(value, list):
            out[key] = [gemini_schema(sub, owner, param, f"{at}/{i}") for i, sub in enumerate(value)]
        else:
            raise InvalidRequest(
                f"{owner}: the JSON Schema keyword {key!r} at {path} cannot be expressed in "
                "Gemini's schema subset (no $ref/$defs, oneOf, allOf, tuples or free-form maps)",
                param=param,
            )
    return out


def _schema_type(value: Any, owner: str, param: str, at: str) -> dict[str, Any]:
    names = value if isinstance(value, list) else [value]
    real = [name for name in names if name != "null"]
    if len(real) > 1 or not all(name in _TYPES for name in names) or not names:
        raise InvalidRequest(f"{owner}: type {value!r} at {at} cannot be expressed for Gemini", param=param)
    if not real:
        return {"type": "NULL"}
    return {"type": _TYPES[real[0]], **({"nullable": True} if len(real) < len(names) else {})}


# ---------------------------------------------------------------------- generation


def generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    limits = [body[name] for name in ("max_completion_tokens", "max_tokens") if body.get(name) is not None]
    if limits:
        config["maxOutputTokens"] = min(limits)
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if candidate_count(body) > 1:
        config["candidateCount"] = candidate_count(body)
    config.update(_response_format(body.get("response_format")))
    effort = reasoning_effort(body)
    if effort is not None:
        budget = GEMINI_BUDGETS[effort]
        caps = [limit for limit in limits if isinstance(limit, int) and not isinstance(limit, bool)]
        config["thinkingConfig"] = {"thinkingBudget": min([budget, *caps])}
    return config


def _response_format(response_format: Any) -> dict[str, Any]:
    if response_format is None:
        return {}
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        if "schema" not in spec:
            return {"responseMimeType": "application/json"}
        name = spec.get("name") or "response"
        return {
            "responseMimeType": "application/json",
            "responseSchema": gemini_schema(spec["schema"], f"response_format schema {name!r}", "response_format"),
        }
    raise InvalidRequest(f"response_format type {kind!r} is not supported for Gemini", param="response_format")


def _dict(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one: a caller's body may hold anything anywhere."""
    return value if isinstance(value, dict) else {}
