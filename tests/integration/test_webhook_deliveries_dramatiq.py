"""Server mode's deliveries (adapters/workers/deliveries.py ``DramatiqDeliveries``) against the
real Redis on 127.0.0.1:6379 (a dramatiq namespace of this test's own) and PostgreSQL:

- two workers, each with its own broker and store connections on one schema (as two
  ``tallyhub worker`` processes), deliver each event exactly once;
- a receiver that fails twice gets the event on the third try, through dramatiq's delayed
  messages;
- a delivery whose wake-up message was never sent is still delivered by the poller.
"""

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
import redis
from eventsourcing.postgres import PostgresDatastore

from adapters.persistence.delivery_store import PostgresDeliveryRows
from adapters.workers.deliveries import Dispatcher, DramatiqDeliveries, dramatiq_namespace
from application.deliveries import DELIVERED, DeliveryOutbox, RetryPolicy
from application.notices import Notice, Subscription
from tests.conftest import PgSchemas
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.redis, pytest.mark.postgres]
REDIS_URL = "redis://127.0.0.1:6379/0"
SECRET = "whsec_dramatiq"
POLICY = RetryPolicy(first_delay_seconds=0.05, max_delay_seconds=0.2, max_attempts=5, timeout_seconds=2.0)


class Subscribers:
    def __init__(self, url: str) -> None:
        self.subscription = Subscription("wh_1", url, ("balance.low",), SECRET)

    def subscribed_to(self, notice_type: str) -> list[Subscription]:
        return [self.subscription] if notice_type == "balance.low" else []


def notice(event_id: str) -> Notice:
    return Notice(event_id, "balance.low", datetime(2026, 12, 7, tzinfo=UTC), {"account": "acme"})


@pytest.fixture
def namespace() -> Iterator[str]:
    namespace = dramatiq_namespace(f"th-test-{secrets.token_hex(6)}")
    yield namespace
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{namespace}*"):
        client.delete(key)
    client.close()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(secret=SECRET).start()
    yield receiver
    receiver.stop()


class Worker:
    """One ``tallyhub worker``'s deliveries: its own store connections, broker, consumer and poller."""

    def __init__(self, schema: str, url: str, namespace: str) -> None:
        self.datastore = PostgresDatastore("test", "127.0.0.1", 5432, "postgres", "", schema=schema, pool_size=6)
        self.rows = PostgresDeliveryRows(self.datastore)
        self.dispatcher = Dispatcher(self.rows, Subscribers(url), policy=POLICY)
        self.deliveries = DramatiqDeliveries(REDIS_URL, self.dispatcher, namespace=namespace, poll_seconds=0.1)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.deliveries.run, args=(self.stop,), kwargs={"threads": 3})

    def start(self) -> "Worker":
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        self.datastore.close()


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        threading.Event().wait(0.02)


def test_two_workers_deliver_each_event_exactly_once(
    pg_schemas: PgSchemas, namespace: str, receiver: WebhookReceiver
) -> None:
    schema = pg_schemas.new()
    workers = [Worker(schema, receiver.url, namespace).start() for _ in range(2)]
    try:
        first = workers[0]
        outbox = DeliveryOutbox(first.rows, first.dispatcher.subscribers, time.time, first.deliveries.enqueue)
        events = [f"evt_{n}" for n in range(30)]
        for event_id in events:
            outbox.publish([notice(event_id)])
        wait_for(lambda: len(receiver.counts()) == len(events))
    finally:
        for worker in workers:
            worker.close()

    assert receiver.counts() == {event_id: 1 for event_id in events}
    assert all(got.signature_valid for got in receiver.received)
    rows = PostgresDeliveryRows(PostgresDatastore("test", "127.0.0.1", 5432, "postgres", "", schema=schema))
    assert {row.status for row in rows.list(limit=100)} == {DELIVERED}
    rows.datastore.close()


def test_a_receiver_that_fails_twice_gets_it_on_the_third_try(
    pg_schemas: PgSchemas, namespace: str, receiver: WebhookReceiver
) -> None:
    receiver.fail_first = 2
    worker = Worker(pg_schemas.new(), receiver.url, namespace).start()
    try:
        DeliveryOutbox(worker.rows, worker.dispatcher.subscribers, time.time, worker.deliveries.enqueue).publish(
            [notice("evt_retry")]
        )
        wait_for(lambda: [row.status for row in worker.rows.list()] == [DELIVERED])
        (row,) = worker.rows.list()
    finally:
        worker.close()
    assert (row.attempts, row.last_status, row.last_error) == (3, 200, None)
    assert receiver.counts() == {"evt_retry": 3}
    assert [got.signature_valid for got in receiver.received] == [True, True, True]


def test_a_delivery_without_a_wake_up_is_sent_by_the_poller(
    pg_schemas: PgSchemas, namespace: str, receiver: WebhookReceiver
) -> None:
    worker = Worker(pg_schemas.new(), receiver.url, namespace)
    DeliveryOutbox(worker.rows, worker.dispatcher.subscribers, time.time).publish([notice("evt_lost")])  # no message
    worker.start()
    try:
        wait_for(lambda: receiver.counts() == {"evt_lost": 1})
        wait_for(lambda: [row.status for row in worker.rows.list()] == [DELIVERED])
    finally:
        worker.close()
