"""The Responses ingress translation (``adapters/http/responses_translate.py``): request
shapes and refusals, answers, the stream translator — and the official ``openai`` SDK
parsing what it produces, its ``responses.stream`` accumulator included.

The SDK tests put a tiny "gateway" behind an ``httpx2.MockTransport``: the SDK's real
request goes through ``chat_body_from_responses``, a canned chat answer (or chunks) through
the functions under test."""

from collections.abc import Callable
from typing import Any

import httpx2
import openai
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.http.responses_translate import (
    ResponsesStreamTranslator,
    chat_body_from_responses,
    input_items,
    output_as_input,
    response_from_completion,
    response_skeleton,
    responses_usage,
    sse_event,
)
from domain.errors import InvalidRequest, MalformedUpstreamAnswer

MODEL = "openai/gpt-4o-mini"
PIXEL_URL = "data:image/png;base64,iVBORw0KGgo="
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}
RECEIPT = {
    "cost": 0.000123,
    "cost_decimal": "0.000123000",
    "cost_nanocredits": 123000,
    "price_book_version": 7,
    "usage_source": "provider",
}
USAGE = {
    "prompt_tokens": 120,
    "completion_tokens": 30,
    "total_tokens": 150,
    "prompt_tokens_details": {"cached_tokens": 20},
    "completion_tokens_details": {"reasoning_tokens": 10},
}


def request(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "input": "Hi", **fields}


def skeleton(body: dict[str, Any] | None = None) -> dict[str, Any]:
    return response_skeleton(body or request(), "resp_abc", 1_700_000_000, store=False)


def completion(message: dict[str, Any], finish: str = "stop", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": {**USAGE, **RECEIPT} if usage is None else usage,
    }


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    document = {"id": "chatcmpl-s1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": choices}
    return document if usage is None else {**document, "usage": usage}


def call_fragment(index: int, arguments: str, call_id: str | None = None, name: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id:
        call.update(id=call_id, type="function")
        call["function"]["name"] = name
    return {"tool_calls": [call]}


# A realistic stream: reasoning, text in pieces, one tool call in fragments, finish, usage.
TOOL_STREAM = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"reasoning_content": "The user wants "}),
    chunk({"reasoning_content": "weather."}),
    chunk({"content": "Let me "}),
    chunk({"content": "check."}),
    chunk(call_fragment(0, "", "call_w1", "get_weather")),
    chunk(call_fragment(0, '{"ci')),
    chunk(call_fragment(0, 'ty": "Paris"}')),
    chunk({}, finish="tool_calls"),
    chunk(usage={**USAGE, **RECEIPT}),
]


def streamed(chunks: list[dict[str, Any]], body: dict[str, Any] | None = None) -> list[tuple[str, dict[str, Any]]]:
    translator = ResponsesStreamTranslator(skeleton(body))
    events = translator.start() + [event for c in chunks for event in translator.feed(c)]
    return events + translator.finish() + translator.closing()


# -- request ----------------------------------------------------------------------


def test_a_string_input_and_instructions_become_a_system_and_a_user_message() -> None:
    chat = chat_body_from_responses(request(instructions="Be brief.", max_output_tokens=50, temperature=0.3))
    assert chat == {
        "model": MODEL,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "max_completion_tokens": 50,
        "temperature": 0.3,
    }


def test_items_with_parts_images_files_and_roles_become_chat_messages() -> None:
    body = request(
        input=[
            {"role": "developer", "content": "Answer in French."},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": PIXEL_URL, "detail": "low"},
                    {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"},
                ],
            },
            {
                "type": "message",
                "role": "assistant",
                "id": "msg_1",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Un pixel.", "annotations": [], "logprobs": []}],
            },
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "dropped"}]},
            {"role": "user", "content": [{"type": "input_text", "text": "Merci"}]},
        ]
    )
    assert chat_body_from_responses(body)["messages"] == [
        {"role": "developer", "content": "Answer in French."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": PIXEL_URL, "detail": "low"}},
                {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"}},
            ],
        },
        {"role": "assistant", "content": "Un pixel."},
        {"role": "user", "content": "Merci"},
    ]


def test_an_assistant_message_and_its_function_calls_become_one_turn_before_the_tool_outputs() -> None:
    body = request(
        input=[
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
            {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "w", "arguments": '{"city":"Paris"}'},
            {"type": "function_call", "call_id": "c2", "name": "w", "arguments": '{"city":"Rome"}'},
            {"type": "function_call_output", "call_id": "c1", "output": "18"},
            {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "25"}]},
        ],
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
    )
    chat = chat_body_from_responses(body)
    assert chat["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "w", "arguments": '{"city":"Paris"}'}},
                {"id": "c2", "type": "function", "function": {"name": "w", "arguments": '{"city":"Rome"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "18"},
        {"role": "tool", "tool_call_id": "c2", "content": "25"},
    ]
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER["parameters"],
                "description": "Weather in a city",
                "strict": True,
            },
        }
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["parallel_tool_calls"] is False


def test_a_function_call_without_a_message_opens_its_own_assistant_turn() -> None:
    items = [
        {"role": "user", "content": "x"},
        {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
    ]
    messages = chat_body_from_responses(request(input=items))["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
    }


def test_tool_choice_and_parallel_tool_calls_without_tools_are_not_sent() -> None:
    chat = chat_body_from_responses(request(tool_choice="auto", parallel_tool_calls=False, tools=[]))
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(chat)


def test_text_format_reasoning_stream_and_identity_are_translated_and_metadata_stays_home() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    chat = chat_body_from_responses(
        request(
            text={
                "format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True},
                "verbosity": "low",
            },
            reasoning={"effort": "high", "summary": "auto"},
            stream=True,
            stream_options={"include_obfuscation": False},
            user="u1",
            safety_identifier="s1",
            metadata={"team": "a"},
            store=True,
            service_tier="flex",
            prompt_cache_key="k",
            include=["reasoning.encrypted_content"],
            max_tool_calls=3,
            truncation="disabled",
            background=False,
        )
    )
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": schema, "strict": True},
    }
    assert (chat["verbosity"], chat["reasoning_effort"]) == ("low", "high")
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert (chat["user"], chat["safety_identifier"], chat["service_tier"], chat["prompt_cache_key"]) == (
        "u1",
        "s1",
        "flex",
        "k",
    )
    assert not {"metadata", "store", "include", "max_tool_calls", "truncation", "background", "text"} & set(chat)
    assert chat_body_from_responses(request(text={"format": {"type": "json_object"}}))["response_format"] == {
        "type": "json_object"
    }


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
        ({"tools": [WEATHER, {"type": "file_search", "vector_store_ids": ["v"]}]}, "tools.1.type"),
        ({"tools": [{"type": "mcp", "server_label": "x"}]}, "tools.0.type"),
        ({"tools": [{"type": "custom", "name": "x"}]}, "tools.0.type"),
        ({"tools": [{"type": "function"}]}, "tools.0.name"),
        ({"tool_choice": {"type": "file_search"}}, "tool_choice"),
        ({"tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []}}, "tool_choice"),
        ({"background": True}, "background"),
        ({"conversation": {"id": "conv_1"}}, "conversation"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"truncation": "auto"}, "truncation"),
        ({"include": ["file_search_call.results"]}, "include"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"frequency_penalty": 1}, "frequency_penalty"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input.0.type"),
        ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input.0.type"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input.0.role"),
        ({"input": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input.0.content.0"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input.0.content.0.file_id",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "u"}]}]},
            "input.0.content.0.file_url",
        ),
        (
            {"input": [{"type": "function_call_output", "call_id": "c", "output": [{"type": "input_image"}]}]},
            "input.0.output.0",
        ),
        ({"input": []}, "input"),
        ({"input": 5}, "input"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name"),
        ({"reasoning": {"effort": "low", "budget": 5}}, "reasoning"),
        ({"store": "yes"}, "store"),
        ({"safety_identifier": "x" * 300}, "safety_identifier"),
        ({"model": ""}, "model"),
    ],
)
def test_what_cannot_be_translated_faithfully_is_refused_naming_the_param(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        chat_body_from_responses(request(**fields))
    assert refused.value.param == param


def test_a_stored_conversation_goes_before_the_input_and_its_output_items_are_input() -> None:
    earlier = [{"role": "user", "content": "Hi"}]
    answered = response_from_completion(completion({"content": "Hello!"}), skeleton())
    earlier += output_as_input(answered)
    chat = chat_body_from_responses(request(input="And you?", instructions="Be kind."), earlier)
    assert chat["messages"] == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "And you?"},
    ]
    assert input_items(request(input="And you?")) == [{"role": "user", "content": "And you?"}]


# -- answer -----------------------------------------------------------------------


def test_an_answer_becomes_reasoning_message_and_function_call_items_with_usage_and_receipt() -> None:
    answer = completion(
        {
            "content": "Checking.",
            "reasoning_content": "Think.",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"P"}'}}
            ],
        },
        finish="tool_calls",
    )
    response = response_from_completion(answer, skeleton(request(tools=[WEATHER])))
    assert (response["id"], response["object"], response["status"], response["model"]) == (
        "resp_abc",
        "response",
        "completed",
        MODEL,
    )
    assert response["output"] == [
        {"id": "rs_abc_0", "type": "reasoning", "summary": [{"type": "summary_text", "text": "Think."}]},
        {
            "id": "msg_abc_1",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Checking.", "annotations": [], "logprobs": []}],
        },
        {
            "id": "fc_abc_2",
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city":"P"}',
            "status": "completed",
        },
    ]
    assert response["usage"] == {
        "input_tokens": 120,
        "input_tokens_details": {"cached_tokens": 20, "cache_write_tokens": 0},
        "output_tokens": 30,
        "output_tokens_details": {"reasoning_tokens": 10},
        "total_tokens": 150,
        **RECEIPT,
    }
    assert response["tools"] == [WEATHER] and response["store"] is False


def test_a_length_cut_is_incomplete_and_a_refusal_is_a_refusal_part() -> None:
    cut = response_from_completion(completion({"content": "Hel"}, finish="length"), skeleton())
    assert (cut["status"], cut["incomplete_details"]) == ("incomplete", {"reason": "max_output_tokens"})
    assert cut["output"][0]["status"] == "incomplete"
    refused = response_from_completion(completion({"content": None, "refusal": "I can't."}), skeleton())
    assert refused["incomplete_details"] == {"reason": "content_filter"}
    assert refused["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't."}]


def test_usage_without_a_charge_has_no_receipt_fields_and_cache_writes_are_counted() -> None:
    usage = responses_usage(
        {"prompt_tokens": 100, "completion_tokens": 5, "prompt_tokens_details": {"cache_write_5m_tokens": 40}}
    )
    assert "cost_nanocredits" not in usage
    assert usage["input_tokens"] == 100 and usage["total_tokens"] == 105
    assert usage["input_tokens_details"] == {"cached_tokens": 0, "cache_write_tokens": 40}


@pytest.mark.parametrize(
    "document",
    [
        {"choices": []},
        {"choices": [{"index": 0, "message": "text"}]},
        {"choices": [{"index": 0, "message": {"content": "x", "tool_calls": {"a": 1}}}]},
    ],
)
def test_an_answer_that_cannot_be_translated_is_the_providers_garbled_answer(document: dict[str, Any]) -> None:
    with pytest.raises(MalformedUpstreamAnswer):
        response_from_completion(document, skeleton())


# -- stream -----------------------------------------------------------------------


def test_a_stream_has_the_responses_events_in_order_with_sequence_numbers() -> None:
    events = streamed(TOOL_STREAM, request(tools=[WEATHER]))
    assert [name for name, _ in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert all(data["type"] == name for name, data in events)
    completed = events[-1][1]["response"]
    assert completed["status"] == "completed" and completed["usage"]["cost_nanocredits"] == 123000
    assert [item["type"] for item in completed["output"]] == ["reasoning", "message", "function_call"]
    assert completed["output"][2]["arguments"] == '{"city": "Paris"}'
    added = events[2][1]["item"]
    assert added == {"id": "rs_abc_0", "type": "reasoning", "summary": []}  # as it was when sent


def test_a_stream_cut_by_its_limit_ends_incomplete() -> None:
    events = streamed([chunk({"content": "Hel"}), chunk({}, finish="length"), chunk(usage=USAGE)])
    name, data = events[-1]
    assert name == "response.incomplete" and data["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_a_broken_stream_ends_with_response_failed_carrying_what_was_produced() -> None:
    translator = ResponsesStreamTranslator(skeleton())
    translator.start()
    translator.feed(chunk({"content": "Hel"}))
    [(name, data)] = translator.failed("the provider ended the stream early")
    assert name == "response.failed" and data["response"]["status"] == "failed"
    assert data["response"]["error"] == {"code": "server_error", "message": "the provider ended the stream early"}
    assert data["response"]["output"][0]["content"][0]["text"] == "Hel"


@given(text=st.text(min_size=1, max_size=40), cuts=st.lists(st.integers(min_value=1, max_value=39), max_size=6))
def test_any_split_of_a_stream_gives_the_plain_answers_output(text: str, cuts: list[int]) -> None:
    bounds = sorted({c for c in cuts if c < len(text)})
    pieces = [text[a:b] for a, b in zip([0, *bounds], [*bounds, len(text)], strict=True)]
    chunks = [chunk({"content": piece}) for piece in pieces] + [chunk({}, finish="stop"), chunk(usage=USAGE)]
    final = streamed(chunks)[-1][1]["response"]
    plain = response_from_completion(completion({"content": text}, usage=USAGE), skeleton())
    assert final["output"] == plain["output"] and final["usage"] == plain["usage"]


# -- the official SDK parses it ---------------------------------------------------

Answer = Callable[[dict[str, Any]], httpx2.Response]


def sdk(answer: Answer, seen: list[dict[str, Any]] | None = None) -> openai.OpenAI:
    """An SDK client whose "gateway" translates its request and answers with ``answer(chat body)``."""

    def handle(http_request: httpx2.Request) -> httpx2.Response:
        body = orjson.loads(http_request.content)
        chat = chat_body_from_responses(body)
        if seen is not None:
            seen.append(chat)
        return answer(body)

    client = httpx2.Client(transport=httpx2.MockTransport(handle))
    return openai.OpenAI(api_key="x", base_url="http://tallyhub.test/v1", http_client=client, max_retries=0)


def plain(document: dict[str, Any]) -> Answer:
    return lambda body: httpx2.Response(200, json=response_from_completion(document, skeleton(body)))


def events_of(chunks: list[dict[str, Any]]) -> Answer:
    def answer(body: dict[str, Any]) -> httpx2.Response:
        content = b"".join(sse_event(name, data) for name, data in streamed(chunks, body))
        return httpx2.Response(200, content=content, headers={"content-type": "text/event-stream"})

    return answer


def test_the_sdk_parses_a_plain_response_with_reasoning_text_and_a_call() -> None:
    answer = completion(
        {
            "content": "Checking.",
            "reasoning_content": "Think.",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
        },
        finish="tool_calls",
    )
    seen: list[dict[str, Any]] = []
    response = sdk(plain(answer), seen).responses.create(model=MODEL, input="Weather?", tools=[WEATHER])  # type: ignore[list-item]
    assert response.output_text == "Checking."
    assert [item.type for item in response.output] == ["reasoning", "message", "function_call"]
    assert response.usage is not None and response.usage.output_tokens_details.reasoning_tokens == 10
    assert (response.usage.model_extra or {})["cost_nanocredits"] == 123000
    assert seen[0]["tools"][0]["function"]["name"] == "get_weather"


def test_the_sdk_stream_helper_accumulates_reasoning_text_and_call_into_the_final_response() -> None:
    client = sdk(events_of(TOOL_STREAM))
    with client.responses.stream(model=MODEL, input="Weather?", tools=[WEATHER]) as stream:  # type: ignore[list-item]
        texts = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(texts) == final.output_text == "Let me check."
    reasoning, message, call = final.output
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "The user wants weather."
    assert message.type == "message" and call.type == "function_call"
    assert call.call_id == "call_w1" and call.parsed_arguments == {"city": "Paris"}
    assert final.usage is not None and (final.usage.model_extra or {})["cost_nanocredits"] == 123000
