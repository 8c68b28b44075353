"""hypothesis strategies for hot-route bodies: a valid request with fields dropped or
replaced by anything JSON can hold (wrong types, integers far past 64 bits, deep nesting,
any unicode, lone surrogates), max_tokens and n huge or negative, whole documents that are
not objects, bytes that are not JSON, number literals JSON parsers disagree on."""

import json
from typing import Any

from hypothesis import strategies as st

from tests.fuzz.conftest import CHAT_MODEL, EMBEDDING_MODEL

VALID: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hello"}]},
    "/v1/messages": {"model": CHAT_MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "Hello"}]},
    "/v1/embeddings": {"model": EMBEDDING_MODEL, "input": "Hello"},
    "/v1/responses": {"model": CHAT_MODEL, "input": "Hello", "max_output_tokens": 64},
}
FIELDS: dict[str, list[str]] = {
    "/v1/chat/completions": [
        "model",
        "messages",
        "stream",
        "stream_options",
        "n",
        "max_tokens",
        "max_completion_tokens",
        "tools",
        "tool_choice",
        "temperature",
        "user",
        "response_format",
    ],
    "/v1/messages": [
        "model",
        "max_tokens",
        "messages",
        "system",
        "stream",
        "tools",
        "tool_choice",
        "temperature",
        "top_p",
        "stop_sequences",
        "metadata",
        "thinking",
        "mcp_servers",
        "output_config",
    ],
    "/v1/embeddings": ["model", "input", "encoding_format", "dimensions", "user"],
    "/v1/responses": [
        "model",
        "input",
        "instructions",
        "stream",
        "max_output_tokens",
        "tools",
        "tool_choice",
        "text",
        "reasoning",
        "store",
        "previous_response_id",
        "metadata",
        "user",
        "background",
    ],
}

HUGE_INTS = st.sampled_from(
    [
        0,
        -1,
        1,
        128,
        129,
        4096,
        2**31,
        2**53 + 1,
        10**9,
        10**9 + 1,
        2**63 - 1,
        2**63,
        2**64,
        -(2**63) - 1,
        10**30,
        -(10**30),
        10**400,
    ]
)
INTS = st.one_of(st.integers(), HUGE_INTS)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
TEXT = st.text(st.characters(exclude_categories=()), max_size=40)  # any code point, lone surrogates included
SCALARS = st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXT)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)


def _deep(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


ROLES = st.sampled_from(["user", "assistant", "system", "tool", "developer", "", "USER", "\u0000"])
PARTS = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}),
    st.fixed_dictionaries(
        {
            "type": st.just("image_url"),
            "image_url": st.one_of(st.fixed_dictionaries({"url": st.one_of(TEXT, JSON_VALUES)}), JSON_VALUES),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["image", "tool_use", "tool_result", "document", "thinking"]),
            "source": JSON_VALUES,
            "id": JSON_VALUES,
            "name": JSON_VALUES,
            "input": JSON_VALUES,
            "tool_use_id": JSON_VALUES,
            "content": JSON_VALUES,
        }
    ),
    JSON_VALUES,
)
MESSAGES = st.lists(
    st.one_of(
        st.fixed_dictionaries({"role": ROLES, "content": st.one_of(TEXT, st.lists(PARTS, max_size=3), JSON_VALUES)}),
        JSON_VALUES,
    ),
    max_size=4,
)
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "model": st.one_of(
        st.sampled_from(
            [CHAT_MODEL, EMBEDDING_MODEL, "fast", "openai/", "/", "openai/gpt-4o-mini\u0000", "x" * 10_000]
        ),
        TEXT,
        JSON_VALUES,
    ),
    "messages": st.one_of(MESSAGES, st.just(_deep(600)), st.just([{"role": "user", "content": _deep(300)}])),
    "max_tokens": INTS,
    "max_completion_tokens": INTS,
    "n": INTS,
    "dimensions": INTS,
    "stream": st.one_of(st.booleans(), JSON_VALUES),
    "stream_options": st.one_of(
        st.fixed_dictionaries({"include_usage": st.one_of(st.booleans(), JSON_VALUES)}), JSON_VALUES
    ),
    "input": st.one_of(TEXT, st.lists(st.one_of(TEXT, INTS, st.lists(INTS, max_size=4)), max_size=4), JSON_VALUES),
    "tools": st.one_of(
        st.lists(
            st.one_of(
                st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries({"name": TEXT})}),
                st.fixed_dictionaries({"name": TEXT, "input_schema": JSON_VALUES}),
                JSON_VALUES,
            ),
            max_size=3,
        ),
        JSON_VALUES,
    ),
    "system": st.one_of(TEXT, st.lists(PARTS, max_size=3), JSON_VALUES),
}


@st.composite
def bodies(draw: st.DrawFn, path: str) -> bytes:
    """A request body: mostly a valid one with some fields changed, sometimes anything at all."""
    kind = draw(st.sampled_from(["mutated"] * 12 + ["document", "bytes", "nesting", "number"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "nesting":
        depth = draw(st.sampled_from([100, 1_000, 100_000]))
        return b'{"model": "' + CHAT_MODEL.encode() + b'", "messages": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == "number":
        literal = draw(st.sampled_from([b"1e999", b"-1e999", b"NaN", b"Infinity", b"1" * 400, b"-0", b"1.0", b"1e2"]))
        field = draw(st.sampled_from(["max_tokens", "n", "max_completion_tokens", "dimensions"]))
        body = json.dumps(VALID[path])[:-1].encode()
        return body + b', "' + field.encode() + b'": ' + literal + b"}"
    if kind == "document":
        document: Any = draw(JSON_VALUES)
    else:
        document = dict(VALID[path])
        for name in draw(st.lists(st.sampled_from(FIELDS[path]), unique=True, min_size=1, max_size=2)):
            if draw(st.integers(0, 5)) == 0:
                document.pop(name, None)
            else:
                document[name] = draw(FIELD_VALUES.get(name, JSON_VALUES) if draw(st.integers(0, 3)) else JSON_VALUES)
    if draw(st.booleans()):
        return json.dumps(document).encode()  # ASCII: lone surrogates as \\ud800 escapes
    return json.dumps(document, ensure_ascii=False).encode("utf-8", errors="surrogatepass")
