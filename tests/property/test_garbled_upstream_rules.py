"""Whatever JSON a provider sends in OpenAI's chat format — any field of a chunk or an answer
replaced by any other JSON value — reading it raises nothing but ``MalformedUpstreamAnswer``
(the provider's failure: a broken stream, or a 502 ``upstream_bad_response``), never a
TypeError or AttributeError that would be taken for a bug of ours (a 500, nothing charged for
output already delivered). And what the chat relay accepts and passes on, the Anthropic
ingress translates without raising (adapters/http/messages.py runs its frames through
``MessagesStreamTranslator``; a plain answer it translates before the charge)."""

from typing import Any, cast

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.http.chat import _ChatFrames, _content_chars, _usage_of
from adapters.http.messages_translate import MessagesStreamTranslator, message_from_completion, message_with_usage
from application.streams import StreamMeter
from domain.errors import MalformedUpstreamAnswer

text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=4)
leaf = st.none() | st.booleans() | st.integers(-2, 3) | st.floats(-1, 2, allow_nan=False) | text
anything = st.recursive(
    leaf, lambda inner: st.lists(inner, max_size=2) | st.dictionaries(text, inner, max_size=2), max_leaves=5
)


def maybe(proper: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The proper value, or any JSON in its place."""
    return proper | anything


def shape(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={name: maybe(value) for name, value in fields.items()})


function = shape(name=text, arguments=text)
call = shape(index=st.integers(0, 2), id=text, type=st.just("function"), function=function)
detail = shape(type=text, text=text, summary=text)
part = shape(
    role=st.just("assistant"),
    content=text | st.lists(shape(type=text, text=text), max_size=2),
    refusal=text,
    reasoning_content=text,
    reasoning=text,
    reasoning_details=st.lists(maybe(detail), max_size=2),
    tool_calls=st.lists(maybe(call), max_size=2),
)
usage = shape(
    prompt_tokens=st.integers(0, 50),
    completion_tokens=st.integers(0, 50),
    total_tokens=st.integers(0, 100),
    prompt_tokens_details=shape(cached_tokens=st.integers(0, 10)),
    completion_tokens_details=shape(reasoning_tokens=st.integers(0, 10)),
)


def document(key: str) -> st.SearchStrategy[dict[str, Any]]:
    choice = shape(
        index=st.integers(0, 1), finish_reason=st.sampled_from(["stop", "length", "tool_calls"]), stop_reason=text
    )
    choice = st.builds(lambda c, p: c if p is None else {**c, key: p}, choice, st.none() | maybe(part))
    return shape(id=text, model=text, choices=st.lists(maybe(choice), max_size=2), usage=usage)


class Meter:
    """What ``_ChatFrames`` writes to (application/streams.py StreamMeter's attributes)."""

    def __init__(self) -> None:
        self.usage: Any = None
        self.output_chars = 0
        self.ttfb_ms: float | None = None

    def first_byte(self) -> None:
        self.ttfb_ms = 1.0


@settings(max_examples=400, deadline=None)
@given(chunks=st.lists(document("delta"), min_size=1, max_size=3), wants_usage=st.booleans())
def test_a_stream_chunk_of_any_shape_is_relayed_or_malformed_and_what_is_relayed_translates(
    chunks: list[dict[str, Any]], wants_usage: bool
) -> None:
    frames = _ChatFrames(cast(StreamMeter, Meter()), wants_usage)  # a stand-in with the meter's attributes
    translator = MessagesStreamTranslator("claude")
    for chunk in chunks:
        try:
            relayed: list[bytes] = []
            frames.take(orjson.dumps(chunk), relayed)
        except MalformedUpstreamAnswer:
            return  # the provider broke the stream: what was relayed before is charged
        for frame in relayed:
            translator.feed(orjson.loads(frame.removeprefix(b"data: ")))
    translator.finish()


@settings(max_examples=400, deadline=None)
@given(answer=document("message"))
def test_a_whole_answer_of_any_shape_is_counted_and_translated_or_malformed(answer: dict[str, Any]) -> None:
    try:
        _usage_of(answer)
        _content_chars(answer)
        message = message_from_completion(answer, "claude")
    except MalformedUpstreamAnswer:
        return  # a 502 upstream_bad_response, nothing charged
    message_with_usage(message, {"prompt_tokens": 3, "completion_tokens": 2, "cost_nanocredits": 5})
