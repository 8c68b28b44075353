"""A request whose hold this ``serve`` knows will fit calls the upstream while the hold is
saved. When a change the gateway could not see (an operator's debit from another process)
takes the credit first, the hold is refused after all: what the official SDK sees is the
ordinary 402, the upstream call is abandoned, nothing is charged and the refusal is
recorded. With ``TALLYHUB_EARLY_UPSTREAM=0`` the upstream is never called for it."""

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from domain.money import format_credits
from tests.e2e.conftest import MODEL, UPSTREAM_KEY, configure
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import Gateway, cli

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def upstream() -> Iterator[FakeOpenAIUpstream]:
    fake = FakeOpenAIUpstream(api_key=UPSTREAM_KEY).start()
    yield fake
    fake.stop()


@pytest.mark.parametrize("early", ["1", "0"])
def test_a_hold_refused_after_its_call_started_answers_402_and_charges_nothing(
    tmp_path: Path, upstream: FakeOpenAIUpstream, early: str
) -> None:
    gateway = Gateway.initialised(tmp_path, TALLYHUB_EARLY_UPSTREAM=early)
    key = configure(gateway, upstream, "acme", "100")
    gateway.start()
    try:
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=20)  # the writer saved acme
        left = gateway.balance("acme")["balance"]
        cli(gateway.env, "credits", "adjust", "acme", format_credits(-left), "--reason", "operator debit")
        calls = len(upstream.requests)
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=20)
        assert refused.value.status_code == 402
        assert refused.value.body["code"] == "insufficient_credits"  # the OpenAI error shape
        assert len(upstream.requests) == calls + (1 if early == "1" else 0)
        balance = gateway.balance("acme")
        assert (balance["balance"], balance["held"]) == (0, 0)
        request_id = refused.value.response.headers["x-request-id"]
        record = gateway.admin_json("GET", f"/requests/{request_id}")
        assert (record["status"], record["error_code"], record["charge"]) == (402, "insufficient_credits", 0)
        # an abandoned call is recorded with the credential it went to, for reconciling the provider's bill
        assert (record["credential_id"] is not None) == (early == "1")
    finally:
        gateway.stop()
