"""An upstream that claims more usage than a request could have used is charged at the
request's bounds, not at its word: the answer says ``clamped``, the record keeps the
claim, and ``tallyhub reconcile`` lists it. Through the real server, with the openai SDK."""

from datetime import UTC, datetime, timedelta

import openai

from tests.e2e.conftest import INPUT_RATE, MODEL, OUTPUT_RATE, Served
from tests.fakes.openai_scripts import Scripted
from tests.support.gateway import cli

CLAIMED = 10**19  # past SQLite's signed 64-bit integers, still an integer to orjson (unsigned 64 bits)


def client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(api_key=served.api_key, base_url=served.gateway.url + "/v1", max_retries=0)


def test_a_claim_of_10_to_the_19_output_tokens_costs_what_max_tokens_5_allows(served: Served) -> None:
    before = served.gateway.balance(served.account)["balance"]
    served.upstream.script(Scripted.usage(prompt_tokens=12, completion_tokens=CLAIMED))
    raw = client(served).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5
    )

    charge = int(raw.headers["x-tallyhub-charge-nanocredits"])
    assert charge == 12 * INPUT_RATE + 5 * OUTPUT_RATE
    assert raw.headers["x-tallyhub-usage-source"] == "clamped"
    assert served.gateway.balance(served.account)["balance"] == before - charge
    request_id = raw.headers["x-request-id"]

    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    report = cli(
        served.gateway.env, "reconcile", "--from", hour.isoformat(), "--to", (hour + timedelta(hours=1)).isoformat()
    )
    listed = {c["request_id"]: c for c in report["clamped"]["charges"]}
    assert request_id in listed
    assert listed[request_id]["reported_usage"]["output_tokens"] == str(CLAIMED)
    assert listed[request_id]["charged_usage"]["output_tokens"] == 5
    assert listed[request_id]["charge"] == charge


def test_a_streamed_claim_is_clamped_too_and_the_final_chunk_says_so(served: Served) -> None:
    served.upstream.script(Scripted.usage(prompt_tokens=12, completion_tokens=CLAIMED))
    stream = client(served).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [chunk.usage for chunk in stream if chunk.usage is not None][-1]
    extra = usage.model_extra or {}
    assert extra["usage_source"] == "clamped"
    assert extra["cost_nanocredits"] == 12 * INPUT_RATE + 3 * OUTPUT_RATE
