"""The credit wallet over HTTP: signed payment webhooks credited once, refunds debited
once, bad deliveries refused with the ledger unchanged; adjustments; starter credits;
grants that expire, taken out by the sweep once; and holds of a killed ``serve``
released by the sweep with nothing charged twice."""

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from adapters.http.payments import sign
from tests.e2e.conftest import MODEL, UPSTREAM_KEY, configure
from tests.fakes.openai_scripts import Scripted
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import Gateway, cli

SECRET = "whsec_test_0123456789abcdef"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = Gateway.initialised(
        tmp_path_factory.mktemp("wallet"), TALLYHUB_PAYMENTS_WEBHOOK_SECRET=SECRET, TALLYHUB_STARTER_CREDITS="0.5"
    )
    cli(gateway.env, "accounts", "create", "acme")
    gateway.start()
    yield gateway
    gateway.stop()


def deliver(
    gateway: Gateway, event: dict, *, secret: str = SECRET, at: float | None = None, body: bytes | None = None
) -> httpx.Response:
    raw = body if body is not None else orjson.dumps(event)
    header = sign(secret, raw, int(at if at is not None else time.time()))
    return httpx.post(
        gateway.url + "/admin/v1/payments/webhook",
        content=raw,
        headers={"tallyhub-signature": header, "content-type": "application/json"},
        timeout=10,
    )


def payment(payment_id: str, amount: str, kind: str = "payment.succeeded", **extra: str) -> dict:
    return {
        "id": f"evt_{payment_id}_{kind}",
        "type": kind,
        "data": {"account": "acme", "payment_id": payment_id, "amount": amount, **extra},
    }


def test_starter_credits_come_from_the_configuration(gateway: Gateway) -> None:
    assert gateway.balance("acme")["granted_total"] == 500_000_000


def test_a_payment_is_credited_once_however_often_it_is_delivered(gateway: Gateway) -> None:
    before = gateway.balance("acme")["balance"]
    first = deliver(gateway, payment("pay_1", "10.25"))
    again = deliver(gateway, payment("pay_1", "10.25"))
    assert first.status_code == again.status_code == 200
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    assert gateway.balance("acme")["balance"] - before == 10_250_000_000


def test_a_refund_is_debited_once(gateway: Gateway) -> None:
    deliver(gateway, payment("pay_2", "5"))
    before = gateway.balance("acme")["balance"]
    refund = payment("pay_2", "2", kind="payment.refunded", refund_id="re_1")
    assert deliver(gateway, refund).json()["applied"] == -2_000_000_000
    assert deliver(gateway, refund).json()["duplicate"] is True
    assert before - gateway.balance("acme")["balance"] == 2_000_000_000


@pytest.mark.parametrize("case", ["bad signature", "old timestamp", "negative amount", "not json", "no account"])
def test_bad_deliveries_are_refused_and_the_ledger_is_unchanged(gateway: Gateway, case: str) -> None:
    before = gateway.balance("acme")
    if case == "bad signature":
        response = deliver(gateway, payment("pay_x", "1"), secret="whsec_wrong")
    elif case == "old timestamp":
        response = deliver(gateway, payment("pay_x", "1"), at=time.time() - 3600)
    elif case == "negative amount":
        response = deliver(gateway, payment("pay_x", "-1"))
    elif case == "not json":
        response = deliver(gateway, {}, body=b"{not json")
    else:
        event = payment("pay_x", "1")
        event["data"]["account"] = "nobody"
        response = deliver(gateway, event)
    assert response.status_code in (400, 404), response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    after = gateway.balance("acme")
    assert (after["balance"], after["held"]) == (before["balance"], before["held"])


def test_unknown_event_types_are_acknowledged_and_ignored(gateway: Gateway) -> None:
    response = deliver(gateway, {"id": "evt_9", "type": "customer.created", "data": {}})
    assert response.status_code == 200 and response.json()["ignored"] is True


def test_adjustments_move_credit_with_a_reason_and_never_below_zero(gateway: Gateway) -> None:
    cli(gateway.env, "accounts", "create", "small", "--starter-credits", "1")
    up = cli(gateway.env, "credits", "adjust", "small", "0.5", "--reason", "goodwill")
    down = cli(gateway.env, "credits", "adjust", "small", "-5", "--reason", "chargeback", "--idempotency-key", "cb1")
    again = cli(gateway.env, "credits", "adjust", "small", "-5", "--reason", "chargeback", "--idempotency-key", "cb1")
    assert (up["applied"], down["applied"], again["credited"]) == (500_000_000, -1_500_000_000, False)
    balance = gateway.balance("small")
    assert balance["balance"] == 0 and balance["adjusted_total"] == -1_000_000_000


def test_an_expiring_grant_leaves_the_balance_at_its_deadline_once(gateway: Gateway) -> None:
    cli(gateway.env, "accounts", "create", "trial", "--starter-credits", "1")
    past = gateway.admin("POST", "/accounts/trial/grants", json={"amount": "1", "expires_at": "2020-01-01T00:00:00Z"})
    assert past.status_code == 400, past.text
    assert set(past.json()["error"]) == {"message", "type", "param", "code"}

    deadline = (datetime.now(UTC) + timedelta(seconds=5)).replace(microsecond=0)
    granted = cli(
        gateway.env,
        "credits",
        "grant",
        "trial",
        "2",
        "--reason",
        "trial",
        "--expires-at",
        deadline.isoformat().replace("+00:00", "Z"),
    )
    assert (granted["credited"], granted["expires_at"]) == (True, deadline.isoformat())
    before = gateway.balance("trial")
    assert (before["balance"], before["expiring"]) == (3 * 10**9, 2 * 10**9)
    assert before["next_expiry"] == deadline.isoformat()

    time.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 0.2)
    cli(gateway.env, "holds", "sweep")  # (or serve's own sweep, if it came first)
    assert cli(gateway.env, "holds", "sweep")["expired_grants"] == 0
    after = gateway.balance("trial")
    assert (after["balance"], after["expired_total"], after["expiring"]) == (10**9, 2 * 10**9, 0)
    statement = cli(gateway.env, "statement", "trial")
    assert [(e["kind"], e["amount"]) for e in statement["entries"]] == [
        ("grant", 10**9),
        ("grant", 2 * 10**9),
        ("expiry", -2 * 10**9),
    ]
    assert statement["closing_balance"] == after["balance"]


def test_holds_of_a_killed_server_are_released_by_the_sweep_and_nothing_is_charged_twice(tmp_path: Path) -> None:
    upstream = FakeOpenAIUpstream(api_key=UPSTREAM_KEY).start()
    gateway = Gateway.initialised(tmp_path, TALLYHUB_HOLD_TTL_SECONDS="2", TALLYHUB_SWEEP_INTERVAL_SECONDS="1")
    key = configure(gateway, upstream, "acme", "5")
    gateway.start()
    try:
        upstream.script(*[Scripted.delay(30)] * 3)  # three requests stuck upstream when the server dies
        headers = {"authorization": f"Bearer {key}"}
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hang"}], "max_tokens": 10}

        def waiting_caller() -> None:
            # stays connected (a caller that leaves has its call cancelled and its hold released
            # at once: tests/e2e/test_client_faults.py); the kill cuts it
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=headers, timeout=60)

        callers = [threading.Thread(target=waiting_caller, daemon=True) for _ in range(3)]
        for caller in callers:
            caller.start()
        upstream.wait_for_requests(3)
        held = gateway.balance("acme")
        assert held["held"] > 0 and held["available"] < held["balance"]
        os.kill(gateway.processes[0].pid, signal.SIGKILL)
        gateway.processes[0].wait()
        for caller in callers:
            caller.join(timeout=30)
        gateway.stop()
        upstream.reset()
        gateway.start()
        deadline = time.monotonic() + 20
        while gateway.balance("acme")["held"] and time.monotonic() < deadline:
            time.sleep(0.3)
        after = gateway.balance("acme")
        assert after["held"] == 0 and after["available"] == after["balance"] == held["balance"]
        assert after["charged_total"] == 0
    finally:
        gateway.stop()
        upstream.stop()
