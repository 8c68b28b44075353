"""Webhook deliveries end to end, from ``tallyhub webhooks add`` to a receiver on 127.0.0.1:

- embedded mode (SQLite): an account's balance crossing its alert threshold reaches the
  subscribed webhook from ``serve``'s in-process delivery loop, signed, once; the delivery
  log (``webhooks deliveries``, ``GET /admin/v1/webhooks/deliveries``) shows it delivered;
- a receiver that always fails ends ``failed`` after ``TALLYHUB_WEBHOOK_MAX_ATTEMPTS`` and
  shows in ``webhooks deliveries --failed`` and ``?failed=true``;
- server mode (PostgreSQL, Redis): two ``tallyhub worker`` processes deliver each alert
  exactly once through their dramatiq actors.
"""

import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import PgSchemas
from tests.support.gateway import REPO, TALLYHUB, Gateway, cli
from tests.support.webhook_receiver import WebhookReceiver

SECRET = "whsec_e2e-receiver-secret-0042"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # a poll interval, not a wait for the condition


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(secret=SECRET).start()
    yield receiver
    receiver.stop()


def subscribe(gateway: Gateway, url: str, *accounts: str) -> None:
    cli(gateway.env, "webhooks", "add", url, "--events", "balance.low", "--secret-stdin", stdin=SECRET + "\n")
    for account in accounts:
        cli(gateway.env, "accounts", "create", account, "--starter-credits", "10")
        cli(gateway.env, "accounts", "alerts", account, "--below", "5")


def test_embedded_serve_delivers_a_balance_alert_signed_once(tmp_path: Path, receiver: WebhookReceiver) -> None:
    gateway = Gateway.initialised(tmp_path)
    subscribe(gateway, receiver.url, "acme")
    gateway.start()
    try:
        cli(gateway.env, "credits", "adjust", "acme", "-6", "--reason", "usage")
        wait_for(lambda: len(receiver.received) == 1, "the balance.low delivery")
        cli(gateway.env, "credits", "adjust", "acme", "-1", "--reason", "usage")  # still below: no new crossing
        wait_for(
            lambda: gateway.admin_json("GET", "/webhooks/deliveries")["data"][0]["status"] == "delivered",
            "the delivery logged as delivered",
        )
        listed = gateway.admin_json("GET", "/webhooks/deliveries")["data"]
    finally:
        gateway.stop()

    (got,) = receiver.received
    assert got.signature_valid and got.json["type"] == "balance.low" and got.json["id"] == got.event_id
    data = got.json["data"]
    assert (data["account"], data["threshold_nanocredits"], data["available_nanocredits"]) == (
        "acme",
        5_000_000_000,
        4_000_000_000,
    )
    assert [(d["event_id"], d["status"], d["attempts"], d["last_status"]) for d in listed] == [
        (got.event_id, "delivered", 1, 200)
    ]
    assert cli(gateway.env, "webhooks", "deliveries")["data"] == listed
    assert cli(gateway.env, "webhooks", "deliveries", "--failed")["data"] == []


def test_a_receiver_that_always_fails_ends_failed_and_is_listed(tmp_path: Path, receiver: WebhookReceiver) -> None:
    receiver.always = 500
    gateway = Gateway.initialised(tmp_path, TALLYHUB_WEBHOOK_MAX_ATTEMPTS="3", TALLYHUB_WEBHOOK_RETRY_SECONDS="1")
    subscribe(gateway, receiver.url, "acme")
    gateway.start()
    try:
        cli(gateway.env, "credits", "adjust", "acme", "-6", "--reason", "usage")
        wait_for(lambda: cli(gateway.env, "webhooks", "deliveries", "--failed")["data"] != [], "the failed delivery")
        failed = gateway.admin_json("GET", "/webhooks/deliveries", params={"failed": "true"})["data"]
    finally:
        gateway.stop()

    assert len(receiver.received) == 3 and all(got.signature_valid for got in receiver.received)
    (row,) = failed
    assert (row["status"], row["attempts"], row["last_status"], row["next_attempt_at"]) == ("failed", 3, 500, None)
    assert row["last_error"].startswith("HTTP 500")
    assert cli(gateway.env, "webhooks", "deliveries", "--failed")["data"] == failed


@pytest.mark.postgres
@pytest.mark.redis
def test_two_server_mode_workers_deliver_each_alert_exactly_once(
    tmp_path: Path, pg_schemas: PgSchemas, receiver: WebhookReceiver
) -> None:
    prefix = f"th-test-{secrets.token_hex(6)}"
    gateway = Gateway.initialised(
        tmp_path,
        pg_schemas.new_url(),
        TALLYHUB_REDIS_URL="redis://127.0.0.1:6379/0",
        TALLYHUB_REDIS_PREFIX=prefix,
    )
    accounts = [f"acct{n}" for n in range(6)]
    subscribe(gateway, receiver.url, *accounts)
    workers = [
        subprocess.Popen(
            [*TALLYHUB, "worker", "--poll-seconds", "0.2"],
            env=gateway.env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / f"worker-{n}.log", "wb"),
        )
        for n in range(2)
    ]
    try:
        for account in accounts:
            cli(gateway.env, "credits", "adjust", account, "-6", "--reason", "usage")
        wait_for(lambda: len(receiver.counts()) == len(accounts), "one delivery per account")
        wait_for(
            lambda: {d["status"] for d in cli(gateway.env, "webhooks", "deliveries")["data"]} == {"delivered"},
            "every delivery logged as delivered",
        )
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()

    assert sorted(receiver.counts().values()) == [1] * len(accounts)
    assert all(got.signature_valid for got in receiver.received)
    assert {got.json["type"] for got in receiver.received} == {"balance.low"}
