"""Case 8, the rule itself: an estimate (one token per four characters) never exceeds the
output cap it is given, and says so when it was held to it; and through the StreamMeter,
a caller gone after 2 KB of text (the provider broke off: test_through_the_gateway.py)."""

import asyncio

import orjson
from hypothesis import given
from hypothesis import strategies as st

from adapters.http.chat import relay
from adapters.http.chat_request import parse_chat_request
from application.calls import StartedCall
from application.ports import ChatExchange
from domain.estimation import estimated_usage
from domain.usage import Usage
from tests.fakes.provider import StreamScript
from tests.unit.test_billed_call import World, world  # noqa: F401  (the fixture)
from tests.unit.test_metered_stream import billing_of, chunk, setup, start


def test_2kb_of_text_held_to_max_tokens_is_estimated_and_flagged() -> None:
    assert estimated_usage(input_chars=0, output_chars=2048, output_cap=100) == Usage(
        output_tokens=100, source="estimated", flags=("output_capped",)
    )


def test_an_estimate_within_its_cap_is_not_flagged() -> None:
    assert estimated_usage(input_chars=40, output_chars=400, output_cap=100) == Usage(
        input_tokens=10, output_tokens=100, source="estimated"
    )


@given(chars=st.integers(min_value=0, max_value=10**9), cap=st.integers(min_value=1, max_value=10**9))
def test_an_estimate_never_exceeds_its_cap(chars: int, cap: int) -> None:
    usage = estimated_usage(input_chars=chars, output_chars=chars, output_cap=cap)
    assert usage.output_tokens <= cap and usage.source == "estimated"
    assert ("output_capped" in usage.flags) == (-(-chars // 4) > cap)


# ---------------------------------------------------------------- through the StreamMeter (no server)


TWO_KB = tuple(chunk("x" * 256) for _ in range(8))  # 2,048 characters: 512 tokens by the estimate's rule


def test_case_8_a_caller_gone_after_2kb_is_charged_an_estimate_held_to_max_tokens(world: World) -> None:
    script = StreamScript(batches=(TWO_KB,), hang=True)
    calls, provider = setup(world, script)
    body = {"model": "smart", "messages": [{"role": "user", "content": "hello"}], "stream": True, "max_tokens": 100}
    chat = parse_chat_request(orjson.dumps(body))

    async def scenario() -> StartedCall[ChatExchange]:
        call = await start(calls, world.key, chat)
        pieces = relay(calls, call, chat)
        await pieces.__anext__()
        await pieces.aclose()  # the client left
        return call

    call = asyncio.run(scenario())
    ((request_id, status, _, usage),) = billing_of(calls).completed
    assert (request_id, status) == (call.opened.request_id, 499)
    assert usage.output_tokens == 100 and usage.source == "estimated" and usage.flags == ("output_capped",)
    assert provider.exchanges[0].aborted
