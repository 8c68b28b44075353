"""OpenAI's Responses API (``POST /v1/responses``) on the gateway: the caller's request →
the gateway's OpenAI chat body, and the pipeline's chat answer → a ``response`` object or
the Responses stream events. Pure functions, no I/O; the endpoint is
adapters/http/responses.py.

Invariants:
- a request is translated without changing what it asks for, or refused with
  ``InvalidRequest`` naming the field (``param``: ``tools.0.type``, ``input.2.content.1``…)
  before anything is routed, held or billed;
- ``usage`` is in Responses' terms and from the same counts the charge was priced from:
  ``input_tokens`` every prompt token (cache reads and writes included, as OpenAI counts),
  ``input_tokens_details.cached_tokens`` the cache reads, ``cache_write_tokens`` the writes,
  ``output_tokens`` everything produced, ``output_tokens_details.reasoning_tokens`` the
  reasoning among it, ``total_tokens`` their sum; plus Tallyhub's receipt fields
  (adapters/http/receipts.py) when the answer was charged;
- a stream is ``response.created``, ``response.in_progress``, then output items numbered
  0, 1, 2… each ``response.output_item.added`` / its parts and deltas / ``…done``, then
  ``response.completed`` (``response.incomplete`` when the output hit its limit or a filter)
  carrying the whole response with its usage; every event has the next ``sequence_number``.
  A stream the provider breaks ends with ``response.failed``.

Request, translated: ``input`` (a string: one user message; or items) and ``instructions``
(→ a first system message); message items of role user / system / developer / assistant
with ``input_text`` / ``output_text`` / ``refusal`` text, ``input_image`` (``image_url``:
a URL or data URL, ``detail`` kept) and ``input_file`` (``file_data`` with its filename) parts;
``function_call`` items (→ the assistant's ``tool_calls``, merged with the assistant message
before them) and ``function_call_output`` (→ ``role: tool``; text output only);
``tools`` of type ``function`` (``name``, ``description``, ``parameters``, ``strict``);
``tool_choice`` (auto / none / required / a named function) and ``parallel_tool_calls``
(both only with tools: alone they choose among nothing, and are not sent);
``max_output_tokens`` → ``max_completion_tokens``; ``temperature``; ``top_p``;
``text.format`` (``json_schema`` → ``response_format`` json_schema, ``json_object``, ``text``);
``text.verbosity`` → ``verbosity``; ``reasoning.effort`` → ``reasoning_effort``;
``stream`` (+ usage asked for); ``user``; ``safety_identifier``; ``service_tier``;
``prompt_cache_key``; ``prompt_cache_retention``.
Attribution only (not sent upstream): ``metadata`` (and ``safety_identifier`` as the end user
when ``user`` is not given). Handled by the endpoint: ``store``, ``previous_response_id``.
Accepted, with nothing to do: ``reasoning.summary`` (a summary item is given whenever the
provider returns reasoning text), ``max_tool_calls`` (it bounds built-in tools, which are
refused), ``background: false``, ``truncation: "disabled"``, ``top_logprobs: 0``,
``stream_options.include_obfuscation`` (no obfuscation padding is added), and
``include: ["reasoning.encrypted_content"]`` (no provider reasoning is encrypted: reasoning
items carry none). Dropped from the conversation: earlier ``reasoning`` items (chat has no
equivalent; the same as the Anthropic ingress's earlier thinking blocks).
Refused: built-in tools (web search, file search, computer use, code interpreter, MCP,
image generation, shell, custom tools…), ``tool_choice`` naming one or ``allowed_tools``,
``background: true``, ``conversation``, ``prompt``, ``truncation: "auto"``, other
``include`` values, ``top_logprobs`` > 0, ``item_reference`` and every other item type,
``file_id`` images and files, ``file_url``, images in a function call's output, and every
top-level field not listed here.

Answer: the first choice's reasoning text → a ``reasoning`` item with one summary text;
its text (and refusal) → a ``message`` item with an ``output_text`` (``refusal``) part; its
tool calls → ``function_call`` items whose ``call_id`` is the provider's call id. Status:
``completed``; ``incomplete`` with ``incomplete_details.reason`` ``max_output_tokens``
(finish reason length) or ``content_filter``. An answer with no choice carrying a message,
or tool calls that are not a list, is ``MalformedUpstreamAnswer`` (the provider's garbled
answer, found before the call is charged: ``response_from_completion`` runs first,
``response_with_usage`` puts the charge in after).
"""

from collections.abc import Iterable
from typing import Any, TypeGuard

import orjson

from adapters.http.receipts import CHARGED_COUNTS
from adapters.providers.openai_family import reasoning_text, usage_from_openai_family
from domain.attribution import MAX_USER_CHARS
from domain.bounds import MAX_TOKENS
from domain.errors import InvalidRequest, MalformedUpstreamAnswer

Event = tuple[str, dict[str, Any]]  # (SSE event name, data)
# Tallyhub's charge fields a charged usage object carries (receipts.receipt_fields).
RECEIPT_FIELDS = (
    "cost",
    "cost_decimal",
    "cost_nanocredits",
    "price_book_version",
    "usage_source",
    "price_missing",
    *CHARGED_COUNTS,
)
# Top-level fields translated into the chat body, or read for the answer and attribution.
TRANSLATED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "max_output_tokens",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "reasoning",
        "stream",
        "stream_options",
        "user",
        "metadata",
        "safety_identifier",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "store",
        "previous_response_id",
        "max_tool_calls",
        "background",
        "truncation",
        "include",
        "top_logprobs",
    }
)
PASSED = ("service_tier", "prompt_cache_key", "prompt_cache_retention", "safety_identifier", "user")
ACCEPTED_INCLUDES = frozenset({"reasoning.encrypted_content"})
ROLES = ("user", "system", "developer", "assistant")
TEXT_PARTS = ("input_text", "output_text")
INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


# -- request ----------------------------------------------------------------------


def chat_body_from_responses(body: dict[str, Any], earlier: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The OpenAI chat-completions body for a Responses request, ``earlier`` (a stored
    conversation's items, oldest first) before its input; raises InvalidRequest."""
    _refuse_unsupported(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: a model id (string) is required", param="model")
    conversation = chat_messages([*(earlier or []), *input_items(body)])
    if not conversation:
        raise InvalidRequest("input: at least one message or item is required", param="input")
    messages = _instructions(body.get("instructions")) + conversation
    chat: dict[str, Any] = {"model": model, "messages": messages}
    chat.update(_limits_and_sampling(body))
    chat.update(_tools(body))
    chat.update(_text(body.get("text")))
    chat.update(_reasoning(body.get("reasoning")))
    if _flag(body, "stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    _check_identity(body)
    chat.update({name: body[name] for name in PASSED if body.get(name) is not None})
    return chat


def input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    """This request's input as Responses input items (a string input is one user message)."""
    given = body.get("input")
    if given is None:
        return []
    if isinstance(given, str):
        return [{"role": "user", "content": given}] if given else []
    if not isinstance(given, list) or not all(isinstance(item, dict) for item in given):
        raise InvalidRequest("input: must be a string or an array of input items (objects)", param="input")
    return given


def attribution_user(body: dict[str, Any]) -> Any:
    """The end user the request is attributed to: ``user``, else ``safety_identifier``."""
    user = body.get("user")
    return user if user not in (None, "") else body.get("safety_identifier")


def wants_store(body: dict[str, Any]) -> bool:
    """The caller asked for the response to be stored (Responses' default)."""
    return body.get("store") is not False


def _refuse_unsupported(body: dict[str, Any]) -> None:
    unknown = sorted(name for name in body if name not in TRANSLATED)
    if unknown:
        raise InvalidRequest(
            f"{unknown[0]}: this Responses parameter cannot be served through Tallyhub", param=unknown[0]
        )
    if body.get("background") not in (None, False):
        raise InvalidRequest("background: background responses are not available through Tallyhub", param="background")
    if body.get("truncation") not in (None, "disabled"):
        raise InvalidRequest(
            "truncation: only 'disabled' is available (Tallyhub does not drop input to fit the context)",
            param="truncation",
        )
    include = body.get("include")
    if include is not None:
        if not isinstance(include, list) or not all(isinstance(value, str) for value in include):
            raise InvalidRequest("include: must be an array of strings", param="include")
        extra = [value for value in include if value not in ACCEPTED_INCLUDES]
        if extra:
            raise InvalidRequest(f"include: {extra[0]!r} cannot be included through Tallyhub", param="include")
    top_logprobs = body.get("top_logprobs")
    if top_logprobs not in (None, 0):
        raise InvalidRequest("top_logprobs: log probabilities are not available through Tallyhub", param="top_logprobs")
    for name in ("max_tool_calls",):
        if body.get(name) is not None and not (_is_int(body[name]) and body[name] >= 1):
            raise InvalidRequest(f"{name}: must be a positive integer", param=name)
    for name in ("store", "parallel_tool_calls"):
        _flag(body, name)
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise InvalidRequest("previous_response_id: must be a response id (string)", param="previous_response_id")
    options = body.get("stream_options")
    if options is not None and not (isinstance(options, dict) and set(options) <= {"include_obfuscation"}):
        raise InvalidRequest("stream_options: only include_obfuscation is accepted", param="stream_options")


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise InvalidRequest(f"{name}: must be a boolean", param=name)
    return value is True


def _check_identity(body: dict[str, Any]) -> None:
    """``user`` and ``metadata`` are checked with the attribution; ``safety_identifier`` here."""
    safety = body.get("safety_identifier")
    if safety is not None and (not isinstance(safety, str) or len(safety) > MAX_USER_CHARS):
        raise InvalidRequest(
            f"safety_identifier: must be a string of at most {MAX_USER_CHARS} characters", param="safety_identifier"
        )


def _instructions(instructions: Any) -> list[dict[str, Any]]:
    if instructions is None or instructions == "":
        return []
    if not isinstance(instructions, str):
        raise InvalidRequest("instructions: must be a string", param="instructions")
    return [{"role": "system", "content": instructions}]


def chat_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages for Responses input items. An assistant's message and the function
    calls after it (in one turn, before any user or tool item) become one chat message."""
    messages: list[dict[str, Any]] = []
    in_turn = False  # the last chat message is the assistant turn still being built
    for index, item in enumerate(items):
        at = f"input.{index}"
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ROLES:
                raise InvalidRequest(f"{at}.role: must be one of {', '.join(ROLES)}", param=f"{at}.role")
            messages.append({"role": role, "content": _content(item.get("content"), role, at)})
            in_turn = role == "assistant"
        elif kind == "function_call":
            call = _tool_call(item, at)
            if in_turn:
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
                in_turn = True
        elif kind == "function_call_output":
            messages.append(_tool_message(item, at))
            in_turn = False
        elif kind != "reasoning":  # earlier reasoning: no chat equivalent, dropped
            raise InvalidRequest(
                f"{at}.type: a {kind!r} item cannot be sent through Tallyhub (message, function_call, "
                "function_call_output and reasoning items can)",
                param=f"{at}.type",
            )
    return messages


def _content(content: Any, role: str, at: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"{at}.content: must be a string or an array of content parts", param=f"{at}.content")
    parts = [_part(part, role, f"{at}.content.{number}") for number, part in enumerate(content)]
    if not parts:
        return ""
    # One text part as a plain string: what every provider accepts.
    return parts[0]["text"] if len(parts) == 1 and parts[0]["type"] == "text" else parts


def _part(part: Any, role: str, at: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in TEXT_PARTS and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "refusal" and role == "assistant" and isinstance(part.get("refusal"), str):
        return {"type": "text", "text": part["refusal"]}
    if kind == "input_image" and role != "assistant":
        return _image(part, at)
    if kind == "input_file" and role != "assistant":
        return _file(part, at)
    raise InvalidRequest(
        f"{at}: must be an input_text, input_image or input_file part (output_text or refusal in an "
        f"assistant message), not {kind!r}",
        param=at,
    )


def _image(part: dict[str, Any], at: str) -> dict[str, Any]:
    if part.get("file_id") is not None:
        raise InvalidRequest(f"{at}.file_id: uploaded files are not available through Tallyhub", param=f"{at}.file_id")
    url = part.get("image_url")
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"{at}.image_url: an image URL or data URL is required", param=f"{at}.image_url")
    image: dict[str, Any] = {"url": url}
    detail = part.get("detail")
    if detail is not None:
        if detail not in ("auto", "low", "high", "original"):
            raise InvalidRequest(f"{at}.detail: must be auto, low, high or original", param=f"{at}.detail")
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def _file(part: dict[str, Any], at: str) -> dict[str, Any]:
    for name in ("file_id", "file_url"):
        if part.get(name) is not None:
            raise InvalidRequest(
                f"{at}.{name}: only inline files (file_data) can be sent through Tallyhub", param=f"{at}.{name}"
            )
    data, filename = part.get("file_data"), part.get("filename")
    if not isinstance(data, str) or not data:
        raise InvalidRequest(f"{at}.file_data: the file's data is required", param=f"{at}.file_data")
    if not isinstance(filename, str) or not filename:
        raise InvalidRequest(f"{at}.filename: required with file_data", param=f"{at}.filename")
    return {"type": "file", "file": {"filename": filename, "file_data": data}}


def _tool_call(item: dict[str, Any], at: str) -> dict[str, Any]:
    call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
        raise InvalidRequest(f"{at}: a function_call item needs a 'call_id' and a 'name'", param=at)
    if not isinstance(arguments, str):
        raise InvalidRequest(f"{at}.arguments: must be a JSON string", param=f"{at}.arguments")
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _tool_message(item: dict[str, Any], at: str) -> dict[str, Any]:
    call_id, output = item.get("call_id"), item.get("output")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"{at}.call_id: required", param=f"{at}.call_id")
    if isinstance(output, list):
        texts = []
        for number, part in enumerate(output):
            where = f"{at}.output.{number}"
            if not (isinstance(part, dict) and part.get("type") == "input_text" and isinstance(part.get("text"), str)):
                raise InvalidRequest(
                    f"{where}: a function call's output can carry text only through Tallyhub (chat tool "
                    "messages are text); put an image in a user message",
                    param=where,
                )
            texts.append(part["text"])
        output = "".join(texts)
    if not isinstance(output, str):
        raise InvalidRequest(f"{at}.output: must be a string or an array of input_text parts", param=f"{at}.output")
    return {"role": "tool", "tool_call_id": call_id, "content": output}


def _limits_and_sampling(body: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    limit = body.get("max_output_tokens")
    if limit is not None:
        if not _is_int(limit) or not 1 <= limit <= MAX_TOKENS:
            raise InvalidRequest(
                f"max_output_tokens: must be an integer from 1 to {MAX_TOKENS}", param="max_output_tokens"
            )
        params["max_completion_tokens"] = limit
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None:
            if not _is_number(value):
                raise InvalidRequest(f"{name}: must be a number", param=name)
            params[name] = value
    return params


def _tools(body: dict[str, Any]) -> dict[str, Any]:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls``; without tools the last two have
    nothing to choose among and are not sent (OpenAI's chat refuses them alone)."""
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise InvalidRequest("tools: must be an array", param="tools")
    choice = _tool_choice(body["tool_choice"]) if body.get("tool_choice") is not None else None
    if not tools:
        return {}
    params: dict[str, Any] = {"tools": [_function_tool(tool, f"tools.{number}") for number, tool in enumerate(tools)]}
    if choice is not None:
        params["tool_choice"] = choice
    if body.get("parallel_tool_calls") is not None:
        params["parallel_tool_calls"] = body["parallel_tool_calls"]
    return params


def _function_tool(tool: Any, at: str) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise InvalidRequest(f"{at}: must be an object", param=at)
    kind = tool.get("type")
    if kind != "function":
        raise InvalidRequest(
            f"{at}.type: the tool {kind!r} is not available through Tallyhub; only function tools "
            "(type, name, description, parameters, strict) are",
            param=f"{at}.type",
        )
    name, parameters = tool.get("name"), tool.get("parameters")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{at}.name: required", param=f"{at}.name")
    function: dict[str, Any] = {"name": name}
    if parameters is not None:
        if not isinstance(parameters, dict):
            raise InvalidRequest(f"{at}.parameters: must be a JSON schema object", param=f"{at}.parameters")
        function["parameters"] = parameters
    description = tool.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise InvalidRequest(f"{at}.description: must be a string", param=f"{at}.description")
        function["description"] = description
    strict = tool.get("strict")
    if strict is not None:
        if not isinstance(strict, bool):
            raise InvalidRequest(f"{at}.strict: must be a boolean", param=f"{at}.strict")
        function["strict"] = strict
    extra = sorted(set(tool) - {"type", "name", "parameters", "description", "strict", "defer_loading"})
    if extra or tool.get("defer_loading") not in (None, False):
        field = extra[0] if extra else "defer_loading"
        raise InvalidRequest(f"{at}.{field}: not available through Tallyhub", param=f"{at}.{field}")
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        if isinstance(name, str) and name:
            return {"type": "function", "function": {"name": name}}
    raise InvalidRequest(
        "tool_choice: must be auto, none, required or {type: function, name} (built-in tools and "
        "allowed_tools are not available through Tallyhub)",
        param="tool_choice",
    )


def _text(text: Any) -> dict[str, Any]:
    if text is None:
        return {}
    if not isinstance(text, dict) or set(text) - {"format", "verbosity"}:
        raise InvalidRequest("text: must be an object with format and/or verbosity", param="text")
    params: dict[str, Any] = {}
    verbosity = text.get("verbosity")
    if verbosity is not None:
        if verbosity not in ("low", "medium", "high"):
            raise InvalidRequest("text.verbosity: must be low, medium or high", param="text.verbosity")
        params["verbosity"] = verbosity
    answer_format = text.get("format")
    if answer_format is None:
        return params
    kind = answer_format.get("type") if isinstance(answer_format, dict) else None
    if kind in ("text", "json_object"):
        params["response_format"] = {"type": kind}
    elif kind == "json_schema":
        name, schema = answer_format.get("name"), answer_format.get("schema")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("text.format.name: required for json_schema", param="text.format.name")
        if not isinstance(schema, dict):
            raise InvalidRequest("text.format.schema: a JSON schema object is required", param="text.format.schema")
        spec: dict[str, Any] = {"name": name, "schema": schema}
        spec.update(
            {key: answer_format[key] for key in ("description", "strict") if answer_format.get(key) is not None}
        )
        params["response_format"] = {"type": "json_schema", "json_schema": spec}
    else:
        raise InvalidRequest("text.format: must be of type text, json_object or json_schema", param="text.format")
    return params


def _reasoning(reasoning: Any) -> dict[str, Any]:
    if reasoning is None:
        return {}
    if not isinstance(reasoning, dict) or set(reasoning) - {"effort", "summary", "generate_summary"}:
        raise InvalidRequest("reasoning: must be an object with effort and/or summary", param="reasoning")
    for name in ("summary", "generate_summary"):
        if reasoning.get(name) not in (None, "auto", "concise", "detailed"):
            raise InvalidRequest(f"reasoning.{name}: must be auto, concise or detailed", param=f"reasoning.{name}")
    effort = reasoning.get("effort")
    if effort is None:
        return {}
    if not isinstance(effort, str) or not effort:
        raise InvalidRequest("reasoning.effort: must be a string", param="reasoning.effort")
    return {"reasoning_effort": effort}


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- answer -----------------------------------------------------------------------


def response_skeleton(body: dict[str, Any], response_id: str, created_at: int, *, store: bool) -> dict[str, Any]:
    """The ``response`` object for a request, in progress and without output: what it echoes
    of the request is what was asked (the model as the caller named it)."""
    reasoning = _object(body.get("reasoning"))
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": body.get("model"),
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": body.get("service_tier"),
        "store": store,
        "temperature": body.get("temperature"),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p"),
        "truncation": "disabled",
        "usage": None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def response_from_completion(completion: dict[str, Any], skeleton: dict[str, Any]) -> dict[str, Any]:
    """The finished ``response`` for a ``chat.completion`` (its first choice), with the
    completion's own usage; ``MalformedUpstreamAnswer`` (the provider's garbled answer) if
    it has no choice with a message or its tool calls are not a list."""
    choice = _first_choice(completion.get("choices"))
    if choice is None or not isinstance(choice.get("message"), dict):
        raise MalformedUpstreamAnswer("the provider's answer has no choice to translate")
    reply, ids = choice["message"], _Ids(skeleton["id"])
    finish = "content_filter" if _is_text(reply.get("refusal")) else choice.get("finish_reason")
    status, details = _status(finish)
    output: list[dict[str, Any]] = []
    thinking = reasoning_text(reply)
    if thinking:
        output.append(_reasoning_item(ids.item("rs", len(output)), thinking))
    calls = reply.get("tool_calls") or []
    if not isinstance(calls, list):
        raise MalformedUpstreamAnswer("the provider sent tool_calls that are not a list")
    parts = _answer_parts(reply)
    if parts or not calls:
        item_status = "incomplete" if status == "incomplete" else "completed"
        output.append(_message_item(ids.item("msg", len(output)), parts or [_text_part("")], item_status))
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            number = len(output)
            output.append(
                _call_item(
                    ids.item("fc", number),
                    ids.call(call.get("id"), number),
                    str(function.get("name") or ""),
                    _arguments(function.get("arguments")),
                    "completed",
                )
            )
    response = {**skeleton, "status": status, "incomplete_details": details, "output": output}
    usage = completion.get("usage")
    return response_with_usage(response, usage if isinstance(usage, dict) else None)


def response_with_usage(response: dict[str, Any], usage: dict[str, Any] | None) -> dict[str, Any]:
    """``response`` with an OpenAI usage object (any family dialect, with Tallyhub's receipt
    fields when it was charged) as its Responses ``usage``; None: no usage."""
    response["usage"] = responses_usage(usage) if usage is not None else None
    return response


def responses_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI chat usage (any family dialect) in Responses' terms, with the receipt fields."""
    counted = usage_from_openai_family(usage)
    translated: dict[str, Any] = {
        "input_tokens": counted.input_tokens,
        "input_tokens_details": {
            "cached_tokens": counted.cached_input_tokens,
            "cache_write_tokens": counted.cache_write_5m_tokens + counted.cache_write_1h_tokens,
        },
        "output_tokens": counted.output_tokens,
        "output_tokens_details": {"reasoning_tokens": counted.reasoning_tokens},
        "total_tokens": counted.input_tokens + counted.output_tokens,
    }
    if "cost_nanocredits" in usage:  # Tallyhub charged it (an upstream's own ``cost`` is not a charge)
        translated.update({name: usage[name] for name in RECEIPT_FIELDS if name in usage})
    return translated


def output_as_input(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The response's output items, as the input items a later turn sends them."""
    output = response.get("output")
    return [dict(item) for item in output] if isinstance(output, list) else []


class _Ids:
    """Item ids from the response's: ``msg_…``, ``rs_…``, ``fc_…``, unique within it."""

    def __init__(self, response_id: str) -> None:
        self.base = response_id.removeprefix("resp_")

    def item(self, prefix: str, index: int) -> str:
        return f"{prefix}_{self.base}_{index}"

    def call(self, call_id: Any, index: int) -> str:
        return call_id if isinstance(call_id, str) and call_id else f"call_{self.base}_{index}"


def _status(finish_reason: Any) -> tuple[str, dict[str, Any] | None]:
    reason = INCOMPLETE_REASONS.get(finish_reason) if isinstance(finish_reason, str) else None
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def _answer_parts(reply: dict[str, Any]) -> list[dict[str, Any]]:
    content = reply.get("content")
    if isinstance(content, list):
        content = "".join(str(part.get("text") or "") for part in content if isinstance(part, dict))
    parts = [_text_part(content)] if isinstance(content, str) and content else []
    refusal = reply.get("refusal")
    if _is_text(refusal):
        parts.append({"type": "refusal", "refusal": refusal})
    return parts


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, parts: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": parts}


def _reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    summary = [{"type": "summary_text", "text": text}] if text else []
    return {"id": item_id, "type": "reasoning", "summary": summary}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def _arguments(arguments: Any) -> str:
    """A call's arguments as the JSON text Responses carries (an object some providers send: dumped)."""
    if isinstance(arguments, str):
        return arguments
    return orjson.dumps(arguments).decode() if isinstance(arguments, (dict, list)) else ""


def _first_choice(choices: Any) -> dict[str, Any] | None:
    if not isinstance(choices, list):
        return None
    candidates = [c for c in choices if isinstance(c, dict)]
    return next((c for c in candidates if c.get("index", 0) == 0), candidates[0] if candidates else None)


def _is_text(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# -- stream -----------------------------------------------------------------------


class ResponsesStreamTranslator:
    """Turns ``chat.completion.chunk`` dicts, one at a time, into Responses stream events.

    ``start()`` first; feed every chunk, the closing usage chunk included; once the upstream
    finished normally ``finish()`` closes the open items and gives the final response (the
    endpoint may store it, and mark it stored or not), then ``closing()`` gives its
    ``response.completed`` (or ``response.incomplete``) event. On a broken stream send
    ``failed()`` instead."""

    def __init__(self, skeleton: dict[str, Any]) -> None:
        self.skeleton = skeleton
        self.ids = _Ids(skeleton["id"])
        self.sequence = 0
        self.output: list[dict[str, Any]] = []  # the items as built so far
        self.done: set[int] = set()  # output indexes whose item is done
        self.message: int | None = None  # the open message item's index
        self.part: int | None = None  # the open part's content index in it
        self.reasoning: int | None = None  # the open reasoning item's index
        self.calls: dict[int, int] = {}  # chat tool-call index → output index
        self.finish_reason: Any = None
        self.refused = False
        self.usage: dict[str, Any] | None = None
        self.final: dict[str, Any] | None = None

    def start(self) -> list[Event]:
        return [
            self._event("response.created", response=self._snapshot("in_progress")),
            self._event("response.in_progress", response=self._snapshot("in_progress")),
        ]

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        if self.final is not None or not isinstance(chunk, dict):
            return []
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choice = _first_choice(chunk.get("choices"))
        if choice is None:
            return []
        delta = _object(choice.get("delta"))
        events: list[Event] = []
        thinking = reasoning_text(delta)
        if thinking:
            events += self._reasoning_delta(thinking)
        for key, kind in (("content", "output_text"), ("refusal", "refusal")):
            if _is_text(delta.get(key)):
                events += self._text_delta(kind, delta[key])
        self.refused = self.refused or _is_text(delta.get("refusal"))
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                events += self._call_fragment(call)
        if choice.get("finish_reason") is not None:
            self.finish_reason = choice["finish_reason"]
        return events

    def finish(self) -> list[Event]:
        """The events closing every open item; sets ``final``, the finished response."""
        if self.final is not None:
            return []
        status, details = _status("content_filter" if self.refused else self.finish_reason)
        events = self._close_reasoning() + self._close_message(status)
        for index in sorted(set(self.calls.values()) - self.done):
            events += self._close_call(index)
        self.final = response_with_usage(
            {**self.skeleton, "status": status, "incomplete_details": details, "output": self.output}, self.usage
        )
        return events

    def closing(self) -> list[Event]:
        """``response.completed`` (or ``response.incomplete``) carrying ``final``."""
        assert self.final is not None, "finish() first"
        name = "response.completed" if self.final["status"] == "completed" else "response.incomplete"
        return [self._event(name, response=self.final)]

    def failed(self, message: str) -> list[Event]:
        """A broken stream's last event: the response failed, with what was produced so far."""
        response = {
            **self.skeleton,
            "status": "failed",
            "error": {"code": "server_error", "message": message},
            "output": self.output,
        }
        self.final = response
        return [self._event("response.failed", response=response)]

    # --- items ---

    def _reasoning_delta(self, text: str) -> list[Event]:
        events: list[Event] = []
        if self.reasoning is None:
            events += self._close_message("completed")
            index = self.reasoning = len(self.output)
            item = _reasoning_item(self.ids.item("rs", index), "")
            events.append(self._event("response.output_item.added", output_index=index, item=dict(item, summary=[])))
            item["summary"] = [{"type": "summary_text", "text": ""}]
            self.output.append(item)
            events.append(
                self._event(
                    "response.reasoning_summary_part.added",
                    item_id=item["id"],
                    output_index=index,
                    summary_index=0,
                    part={"type": "summary_text", "text": ""},
                )
            )
        item = self.output[self.reasoning]
        item["summary"][0]["text"] += text
        events.append(
            self._event(
                "response.reasoning_summary_text.delta",
                item_id=item["id"],
                output_index=self.reasoning,
                summary_index=0,
                delta=text,
            )
        )
        return events

    def _close_reasoning(self) -> list[Event]:
        index = self.reasoning
        if index is None:
            return []
        self.reasoning = None
        self.done.add(index)
        item = self.output[index]
        text = item["summary"][0]["text"]
        common = {"item_id": item["id"], "output_index": index, "summary_index": 0}
        return [
            self._event("response.reasoning_summary_text.done", **common, text=text),
            self._event("response.reasoning_summary_part.done", **common, part={"type": "summary_text", "text": text}),
            self._event("response.output_item.done", output_index=index, item=item),
        ]

    def _text_delta(self, kind: str, text: str) -> list[Event]:
        events = self._close_reasoning()
        if self.message is None:
            index = self.message = len(self.output)
            item = _message_item(self.ids.item("msg", index), [], "in_progress")
            self.output.append(item)
            events.append(self._event("response.output_item.added", output_index=index, item=dict(item, content=[])))
        item = self.output[self.message]
        parts = item["content"]
        if self.part is None or parts[self.part]["type"] != kind:
            events += self._close_part()
            part = _text_part("") if kind == "output_text" else {"type": "refusal", "refusal": ""}
            parts.append(part)
            self.part = len(parts) - 1
            events.append(self._event("response.content_part.added", **self._at_part(), part=dict(part)))
        field = "text" if kind == "output_text" else "refusal"
        parts[self.part][field] += text
        name = "response.output_text.delta" if kind == "output_text" else "response.refusal.delta"
        extra: dict[str, Any] = {"logprobs": []} if kind == "output_text" else {}
        events.append(self._event(name, **self._at_part(), delta=text, **extra))
        return events

    def _at_part(self) -> dict[str, Any]:
        assert self.message is not None and self.part is not None
        return {"item_id": self.output[self.message]["id"], "output_index": self.message, "content_index": self.part}

    def _close_part(self) -> list[Event]:
        if self.part is None:
            return []
        assert self.message is not None
        part = self.output[self.message]["content"][self.part]
        at = self._at_part()
        self.part = None
        if part["type"] == "output_text":
            done = self._event("response.output_text.done", **at, text=part["text"], logprobs=[])
        else:
            done = self._event("response.refusal.done", **at, refusal=part["refusal"])
        return [done, self._event("response.content_part.done", **at, part=part)]

    def _close_message(self, status: str) -> list[Event]:
        index = self.message
        if index is None:
            return []
        events = self._close_part()
        self.message = None
        self.done.add(index)
        item = self.output[index]
        item["status"] = "incomplete" if status == "incomplete" else "completed"
        return events + [self._event("response.output_item.done", output_index=index, item=item)]

    def _call_fragment(self, call: dict[str, Any]) -> list[Event]:
        number = call["index"] if _is_int(call.get("index")) else 0
        function = _object(call.get("function"))
        call_id = call.get("id")
        index = self.calls.get(number)
        events: list[Event] = []
        if index is None or (_is_text(call_id) and call_id != self.output[index]["call_id"]):
            # A new index, or a new id under a used index (relays that number every call 0).
            events += self._close_reasoning() + self._close_message("completed")
            index = len(self.output)
            name = str(function.get("name") or "")
            item = _call_item(self.ids.item("fc", index), self.ids.call(call_id, index), name, "", "in_progress")
            self.output.append(item)
            self.calls[number] = index
            events.append(self._event("response.output_item.added", output_index=index, item=dict(item)))
        arguments = function.get("arguments")
        if isinstance(arguments, (dict, list)):
            arguments = _arguments(arguments)
        if _is_text(arguments):
            item = self.output[index]
            item["arguments"] += arguments
            events.append(
                self._event(
                    "response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=arguments
                )
            )
        return events

    def _close_call(self, index: int) -> list[Event]:
        self.done.add(index)
        item = self.output[index]
        item["status"] = "completed"
        return [
            self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=item["name"],
                arguments=item["arguments"],
            ),
            self._event("response.output_item.done", output_index=index, item=item),
        ]

    # --- framing ---

    def _snapshot(self, status: str) -> dict[str, Any]:
        return {**self.skeleton, "status": status, "output": []}

    def _event(self, name: str, /, **fields: Any) -> Event:
        data = {"type": name, "sequence_number": self.sequence, **_copied(fields)}
        self.sequence += 1
        return name, data


def _copied(fields: dict[str, Any]) -> dict[str, Any]:
    """The event's fields as they are now: the items keep changing after it is sent."""
    return orjson.loads(orjson.dumps(fields)) if _holds_items(fields.values()) else fields


def _holds_items(values: Iterable[Any]) -> bool:
    return any(isinstance(value, (dict, list)) for value in values)


def sse_event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
