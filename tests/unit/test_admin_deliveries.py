"""``GET /admin/v1/webhooks/deliveries`` in process: behind the admin key, the delivery log
newest first with each delivery's status, attempts and last error, ``?failed=true`` only the
failed ones, a bad ``limit`` refused in the API's error shape; and the services' outbox is
the one the alert process publishes to, delivering to webhooks subscribed in the ledger."""

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from adapters.bootstrap import build_services, in_memory_ledger
from adapters.http.app import create_app
from adapters.services import Services
from adapters.settings import Settings
from adapters.workers.deliveries import dispatcher_for
from application.notices import Notice
from tests.fakes.clock import FakeClock
from tests.support.webhook_receiver import WebhookReceiver

SECRET = "whsec_admin-deliveries-secret-01"


@pytest.fixture
def setup() -> Iterator[tuple[Services, TestClient, str, WebhookReceiver, WebhookReceiver]]:
    ok, failing = WebhookReceiver(secret=SECRET).start(), WebhookReceiver(secret=SECRET, always=502).start()
    ledger = in_memory_ledger(clock=FakeClock())
    key = ledger.initialise()
    services = build_services(Settings(webhook_max_attempts=1), ledger=ledger)
    services.webhooks.add_webhook(ok.url, ["balance.low"], SECRET)
    services.webhooks.add_webhook(failing.url, ["balance.low", "credential.disabled"], SECRET)
    yield services, TestClient(create_app(services, run_projections=False)), key, ok, failing
    ok.stop()
    failing.stop()
    ledger.close()


def test_the_delivery_log_over_the_admin_api(
    setup: tuple[Services, TestClient, str, WebhookReceiver, WebhookReceiver],
) -> None:
    services, client, key, ok, failing = setup
    at = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    services.deliveries.publish([Notice("evt_low", "balance.low", at, {"account": "acme"})])
    assert dispatcher_for(services).run_due() == 2
    assert (len(ok.received), len(failing.received)) == (1, 1)
    assert ok.received[0].signature_valid and failing.received[0].signature_valid

    headers = {"authorization": f"Bearer {key}"}
    every = client.get("/admin/v1/webhooks/deliveries", headers=headers)
    assert every.status_code == 200, every.text
    by_url = {d["url"]: d for d in every.json()["data"]}
    assert (by_url[ok.url]["status"], by_url[ok.url]["attempts"], by_url[ok.url]["last_status"]) == (
        "delivered",
        1,
        200,
    )
    assert by_url[failing.url]["status"] == "failed" and by_url[failing.url]["last_error"] == "HTTP 502: no"
    assert {d["event_id"] for d in every.json()["data"]} == {"evt_low"}
    assert SECRET not in every.text

    failed = client.get("/admin/v1/webhooks/deliveries", params={"failed": "true"}, headers=headers).json()["data"]
    assert [d["url"] for d in failed] == [failing.url]
    assert len(client.get("/admin/v1/webhooks/deliveries", params={"limit": 1}, headers=headers).json()["data"]) == 1

    bad = client.get("/admin/v1/webhooks/deliveries", params={"limit": 0}, headers=headers)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "query.limit"
    assert client.get("/admin/v1/webhooks/deliveries").status_code == 401


def test_the_metrics_count_deliveries_by_status(
    setup: tuple[Services, TestClient, str, WebhookReceiver, WebhookReceiver],
) -> None:
    services, client, _, _, _ = setup
    at = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    services.deliveries.publish([Notice(f"evt_{n}", "balance.low", at, {}) for n in range(3)])
    services.deliveries.publish([Notice("evt_cred", "credential.disabled", at, {})])
    dispatcher_for(services).run_due(limit=5)  # five of the seven: two stay pending

    lines = set(client.get("/metrics").text.splitlines())
    assert {
        'tallyhub_webhook_deliveries{status="delivered"} 3.0',
        'tallyhub_webhook_deliveries{status="failed"} 2.0',
        'tallyhub_webhook_deliveries{status="pending"} 2.0',
    } <= lines
