"""hypothesis-made bodies for the hot routes (chat completions, messages, embeddings): a
valid request with fields dropped or replaced by anything JSON can hold (wrong types,
integers far past 64 bits, deep nesting, any unicode, lone surrogates), max_tokens and
n huge or negative, whole documents that are not objects, bytes that are not JSON; now
and then the provider fails, rate-limits or breaks its stream. Whatever arrives:

- no 5xx but the provider's 502/503/504, no traceback, no secret, errors in OpenAI's
  shape (Anthropic's on /v1/messages);
- no charge above the request's hold (credits mode): every ``HoldSettled`` charges at
  most what was held for that request;
- the ledger verifies afterwards.

``FUZZ_EXAMPLES`` scales the examples (default 100 per route); the bodies are
tests/fuzz/strategies.py's.
"""

import json

import hypothesis
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from adapters.cli.audit_commands import run_verify
from tests.fakes.openai_scripts import Scripted
from tests.fuzz.conftest import FuzzGateway, fuzz_examples, fuzz_seed
from tests.fuzz.judge import ExceptionLog, answer_problem, settled_charges
from tests.fuzz.strategies import VALID, bodies

UPSTREAM = st.sampled_from(["normal"] * 12 + ["error500", "error429", "broken", "garbage"])
SCRIPTS = {
    "error500": Scripted(error_status=500, error_message="boom"),
    "error429": Scripted(error_status=429, error_message="slow down", retry_after=1),
    "broken": Scripted(break_after=1),
    "garbage": Scripted(raw_status=200, raw_body="<html>not json</html>"),
}
WHO = st.sampled_from(["user"] * 6 + ["admin", "anonymous", "wrong"])


@pytest.mark.parametrize("path", list(VALID))
def test_no_body_makes_a_hot_route_fail_leak_or_overcharge(fuzz_gateway: FuzzGateway, path: str) -> None:
    problems: list[str] = []
    statuses: dict[int, int] = {}

    @hypothesis.seed(fuzz_seed())
    @settings(
        max_examples=fuzz_examples(100),
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(body=bodies(path), who=WHO, upstream=UPSTREAM)
    @example(body=json.dumps(VALID[path]).encode(), who="user", upstream="normal")  # one that is served, always
    def run(body: bytes, who: str, upstream: str) -> None:
        gateway = fuzz_gateway
        gateway.upstream.reset()
        gateway.forget_upstream_failures()
        if upstream != "normal":
            gateway.upstream.script(SCRIPTS[upstream])
        headers = {"content-type": "application/json", **gateway.auth(who)}
        if who == "wrong":
            headers["authorization"] = "Bearer sk-not-a-key-" + "x" * 20
        if path == "/v1/messages" and who == "user" and upstream == "normal":
            headers["x-api-key"] = headers.pop("authorization").removeprefix("Bearer ")
        response = gateway.client.post(path, content=body, headers=headers)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        problem = answer_problem(path, response.status_code, response.headers, response.content, gateway.secrets)
        if problem and len(problems) < 5:
            problems.append(f"{path} as {who}, upstream {upstream}: {problem}\n    body: {body[:400]!r}")

    with ExceptionLog() as logged:
        run()
    assert not problems, "\n".join(problems) + "".join(f"\n{raised}" for raised in fuzz_gateway.raised[:2])
    assert not fuzz_gateway.raised, fuzz_gateway.raised[0]
    assert not logged.records, "exceptions in the gateway's log:\n" + "\n".join(logged.summary())
    assert statuses.get(200), f"no fuzzed body was served: {statuses}"


def test_no_charge_exceeds_its_hold_and_the_ledger_verifies(fuzz_gateway: FuzzGateway) -> None:
    settled, over = settled_charges(fuzz_gateway.services)
    assert settled, "no fuzzed request was charged"
    assert not over, f"charges above their holds: {over[:5]}"
    report = run_verify(fuzz_gateway.services, [])
    assert report["ok"], report["problems"]
