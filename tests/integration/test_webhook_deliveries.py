"""Webhook deliveries (application/deliveries.py, adapters/workers/deliveries.py) on every
backend the event store runs on (in memory, SQLite, PostgreSQL), to a receiver on 127.0.0.1:

- a notice reaches its subscribed webhook once, with a signature the documented receiver
  check accepts, the event id header and the documented JSON body;
- a receiver that fails twice gets it on the third try, at the documented backoff, and every
  attempt is logged in the row; one that always fails ends ``failed`` after the maximum;
- publishing the same notice twice (or concurrently) gives one delivery;
- redirects are not followed, timeouts and refused connections are retried, a removed
  webhook is given up on, and the secret is never logged;
- two dispatchers on one store deliver each event exactly once.
"""

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteDatastore
from hypothesis import given
from hypothesis import strategies as st

from adapters.crypto.webhook_signature import sign
from adapters.persistence.delivery_store import InMemoryDeliveryRows, delivery_rows_for
from adapters.workers.deliveries import Dispatcher
from application.deliveries import DELIVERED, FAILED, PENDING, DeliveryOutbox, DeliveryRows, RetryPolicy
from application.notices import Notice, Subscription
from tests.conftest import PgSchemas
from tests.support.webhook_receiver import WebhookReceiver

SECRET = "whsec_test"
POLICY = RetryPolicy(first_delay_seconds=1.0, max_delay_seconds=8.0, max_attempts=4, timeout_seconds=2.0)


class Clock:
    """Moves only when told; starts at a whole second of wall time, so signatures stay in the receiver's tolerance."""

    def __init__(self) -> None:
        self.current = self.start = float(int(time.time()))

    def __call__(self) -> float:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += seconds


class StaticSubscribers:
    def __init__(self, *subscriptions: Subscription) -> None:
        self.subscriptions = list(subscriptions)

    def subscribed_to(self, notice_type: str) -> list[Subscription]:
        return [found for found in self.subscriptions if notice_type in found.events]


def notice(event_id: str = "evt_1", notice_type: str = "balance.low") -> Notice:
    occurred = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    return Notice(event_id, notice_type, occurred, {"account": "acme", "threshold": "5.00", "available": "4.50"})


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def rows(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DeliveryRows]:
    if request.param == "memory":
        yield InMemoryDeliveryRows()
    elif request.param == "sqlite":
        datastore = SQLiteDatastore(str(tmp_path / "store.sqlite"))
        yield delivery_rows_for(_Recorder(datastore))
        datastore.close()
    else:
        schemas: PgSchemas = request.getfixturevalue("pg_schemas")
        datastore = PostgresDatastore("test", "127.0.0.1", 5432, "postgres", "", schema=schemas.new(), pool_size=4)
        yield delivery_rows_for(_Recorder(datastore))
        datastore.close()


class _Recorder:
    def __init__(self, datastore: object) -> None:
        self.datastore = datastore


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(secret=SECRET).start()
    yield receiver
    receiver.stop()


def setup(rows: DeliveryRows, url: str, clock: Clock) -> tuple[DeliveryOutbox, Dispatcher]:
    subscribers = StaticSubscribers(Subscription("wh_1", url, ("balance.low",), SECRET))
    outbox = DeliveryOutbox(rows, subscribers, clock)
    return outbox, Dispatcher(rows, subscribers, policy=POLICY, now=clock)


def test_a_notice_reaches_its_webhook_signed_with_the_documented_body(
    rows: DeliveryRows, receiver: WebhookReceiver
) -> None:
    clock = Clock()
    outbox, dispatcher = setup(rows, receiver.url, clock)
    outbox.publish([notice(), notice("evt_other", "credential.disabled")])  # nobody wants the second one

    assert dispatcher.run_due() == 1
    (got,) = receiver.received
    assert got.signature_valid and got.event_id == "evt_1"
    assert got.headers["content-type"] == "application/json"
    assert got.json == {
        "id": "evt_1",
        "type": "balance.low",
        "created_at": "2026-12-07T03:00:00Z",
        "data": {"account": "acme", "threshold": "5.00", "available": "4.50"},
    }
    (row,) = rows.list()
    assert (row.status, row.attempts, row.last_status, row.next_attempt_at) == (DELIVERED, 1, 200, None)
    assert dispatcher.run_due() == 0  # delivered rows are not sent again


def test_a_receiver_that_fails_twice_gets_it_on_the_third_try_at_the_backoff(
    rows: DeliveryRows, receiver: WebhookReceiver
) -> None:
    receiver.fail_first = 2
    clock = Clock()
    outbox, dispatcher = setup(rows, receiver.url, clock)
    outbox.publish([notice()])

    assert dispatcher.run_due() == 1
    (row,) = rows.list()
    assert (row.status, row.attempts, row.last_status, row.next_attempt_at) == (PENDING, 1, 500, clock.start + 1)
    assert row.last_error is not None and row.last_error.startswith("HTTP 500")
    assert dispatcher.run_due() == 0  # not due yet
    clock.advance(1)
    assert dispatcher.run_due() == 1
    assert rows.list()[0].next_attempt_at == clock.start + 1 + 2  # the second failure waits 2 s
    clock.advance(1.5)
    assert dispatcher.run_due() == 0
    clock.advance(0.5)
    assert dispatcher.run_due() == 1

    (row,) = rows.list()
    assert (row.status, row.attempts, row.last_status, row.last_error) == (DELIVERED, 3, 200, None)
    assert len(receiver.received) == 3 and all(got.signature_valid for got in receiver.received)
    assert receiver.counts() == {"evt_1": 3}


def test_a_receiver_that_always_fails_ends_failed_after_the_maximum(
    rows: DeliveryRows, receiver: WebhookReceiver
) -> None:
    receiver.always = 503
    clock = Clock()
    outbox, dispatcher = setup(rows, receiver.url, clock)
    outbox.publish([notice()])
    for _ in range(10):
        dispatcher.run_due()
        clock.advance(POLICY.max_delay_seconds)

    assert len(receiver.received) == POLICY.max_attempts
    (row,) = rows.list(failed=True)
    assert (row.status, row.attempts, row.last_status, row.next_attempt_at) == (FAILED, 4, 503, None)
    assert row.last_error == "HTTP 503: no"


def test_publishing_the_same_notice_twice_gives_one_delivery(rows: DeliveryRows, receiver: WebhookReceiver) -> None:
    clock = Clock()
    outbox, dispatcher = setup(rows, receiver.url, clock)
    threads = [threading.Thread(target=outbox.publish, args=([notice()],)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outbox.publish([notice()])

    assert len(rows.list()) == 1
    assert dispatcher.run_due() == 1 and dispatcher.run_due() == 0
    assert receiver.counts() == {"evt_1": 1}


def test_two_dispatchers_deliver_each_event_exactly_once(rows: DeliveryRows, receiver: WebhookReceiver) -> None:
    clock = Clock()
    outbox, first = setup(rows, receiver.url, clock)
    second = Dispatcher(rows, first.subscribers, policy=POLICY, now=clock)
    outbox.publish([notice(f"evt_{n}") for n in range(40)])

    threads = [threading.Thread(target=dispatcher.run_due) for dispatcher in (first, second, first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert receiver.counts() == {f"evt_{n}": 1 for n in range(40)}
    assert {row.status for row in rows.list()} == {DELIVERED}


def test_a_redirect_is_not_followed(rows: DeliveryRows) -> None:
    elsewhere = WebhookReceiver(secret=SECRET).start()
    redirecting = WebhookReceiver(secret=SECRET, redirect_to=elsewhere.url).start()
    try:
        clock = Clock()
        outbox, dispatcher = setup(rows, redirecting.url, clock)
        outbox.publish([notice()])
        dispatcher.run_due()
        assert len(redirecting.received) == 1 and elsewhere.received == []
        (row,) = rows.list()
        assert (row.status, row.last_status) == (PENDING, 302)
    finally:
        redirecting.stop()
        elsewhere.stop()


def test_a_timeout_and_a_refused_connection_are_retried(rows: DeliveryRows) -> None:
    silent = socket.socket()  # accepts connections into its backlog and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused_port = closed.getsockname()[1]
    closed.close()
    try:
        clock = Clock()
        subscribers = StaticSubscribers(
            Subscription("wh_silent", f"http://127.0.0.1:{silent.getsockname()[1]}/", ("balance.low",), SECRET),
            Subscription("wh_gone", f"http://127.0.0.1:{refused_port}/", ("balance.low",), SECRET),
        )
        policy = RetryPolicy(first_delay_seconds=1.0, max_attempts=3, timeout_seconds=0.3)
        DeliveryOutbox(rows, subscribers, clock).publish([notice()])
        assert Dispatcher(rows, subscribers, policy=policy, now=clock).run_due() == 2
        for row in rows.list():
            assert (row.status, row.attempts, row.last_status) == (PENDING, 1, None)
            assert row.last_error is not None
        assert {row.webhook_id: row.last_error.split(":")[0] for row in rows.list() if row.last_error} == {
            "wh_silent": "TimeoutError",
            "wh_gone": "URLError",
        }
    finally:
        silent.close()


def test_a_removed_webhook_is_given_up_and_the_secret_is_never_logged(
    rows: DeliveryRows, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    receiver.always = 500
    outbox, dispatcher = setup(rows, receiver.url, clock)
    outbox.publish([notice()])
    with caplog.at_level(logging.DEBUG):
        dispatcher.run_due()
        dispatcher.subscribers = StaticSubscribers()  # the webhook was removed
        clock.advance(60)
        dispatcher.run_due()

    (row,) = rows.list(failed=True)
    assert row.attempts == 1 and "removed" in (row.last_error or "")
    assert len(receiver.received) == 1
    assert caplog.records and not any(SECRET in record.getMessage() for record in caplog.records)
    assert SECRET not in repr(row)


@given(
    first=st.floats(min_value=0.01, max_value=60),
    cap=st.floats(min_value=1, max_value=86_400),
    attempts=st.integers(min_value=1, max_value=200),
)
def test_the_backoff_doubles_from_the_first_delay_and_never_passes_the_cap(
    first: float, cap: float, attempts: int
) -> None:
    policy = RetryPolicy(first_delay_seconds=first, max_delay_seconds=cap)
    assert policy.delay_after(1) == min(first, cap)
    assert policy.delay_after(attempts) <= cap
    assert policy.delay_after(attempts + 1) in (policy.delay_after(attempts) * 2, cap)


def documented_verify() -> Callable[..., bool]:
    """The receiver snippet of docs/operations.md ("Deliveries and signatures"), as written there."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    section = text[text.index("### Deliveries and signatures") :]
    snippet = section[
        section.index("```python") + len("```python") : section.index("```", section.index("```python") + 9)
    ]
    namespace: dict[str, Any] = {}
    exec(compile(snippet, "docs/operations.md", "exec"), namespace)
    return cast(Callable[..., bool], namespace["verify"])


def test_the_documented_receiver_snippet_accepts_a_delivery_and_refuses_a_forgery(
    receiver: WebhookReceiver,
) -> None:
    clock = Clock()
    rows = InMemoryDeliveryRows()
    outbox, dispatcher = setup(rows, receiver.url, clock)
    outbox.publish([notice()])
    dispatcher.run_due()
    (got,) = receiver.received
    verify = documented_verify()

    header = got.headers["tallyhub-signature"]
    assert verify(SECRET, got.body, header)
    assert not verify("whsec_another", got.body, header)
    assert not verify(SECRET, got.body.replace(b"4.50", b"9.50"), header)
    assert not verify(SECRET, got.body, sign(SECRET, got.body, int(time.time()) - 3600))  # a replay
    assert verify(SECRET, got.body, sign(SECRET, got.body, int(time.time()) - 60))


def test_a_garbled_answer_and_a_non_http_url_are_failed_attempts_not_crashes() -> None:
    garbling = socket.socket()
    garbling.bind(("127.0.0.1", 0))
    garbling.listen(1)

    def answer_garbage() -> None:
        connection, _ = garbling.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"NOT HTTP AT ALL\r\n\r\n")

    server = threading.Thread(target=answer_garbage, daemon=True)
    server.start()
    try:
        clock, rows = Clock(), InMemoryDeliveryRows()
        subscribers = StaticSubscribers(
            Subscription("wh_garbled", f"http://127.0.0.1:{garbling.getsockname()[1]}/", ("balance.low",), SECRET),
            Subscription("wh_file", "file:///etc/passwd", ("balance.low",), SECRET),
        )
        DeliveryOutbox(rows, subscribers, clock).publish([notice()])
        assert Dispatcher(rows, subscribers, policy=POLICY, now=clock).run_due() == 2
    finally:
        server.join(10)
        garbling.close()

    errors = {row.webhook_id: (row.status, row.attempts, row.last_status, row.last_error) for row in rows.list()}
    assert errors["wh_file"] == (PENDING, 1, None, "refused: only http and https URLs are delivered to")
    assert errors["wh_garbled"][:3] == (PENDING, 1, None)
    assert (errors["wh_garbled"][3] or "").startswith("BadStatusLine")
