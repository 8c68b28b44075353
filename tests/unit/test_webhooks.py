"""Webhook subscriptions and balance-alert thresholds: through the admin API (in process) and
the command line (a SQLite store): the signing secret is shown once, is never in an event,
a listing or the store's tables in clear, and URLs and event names are checked."""

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapters.bootstrap import build_ledger, build_services, in_memory_ledger
from adapters.http.app import create_app
from adapters.settings import Settings
from application.accounts import Accounts
from application.key_management import rotate_master, secrets_status
from application.ledger import Ledger
from application.webhooks import LedgerSubscribers, Webhooks
from domain.errors import InvalidRequest, NotFound
from tests.fakes.clock import FakeClock
from tests.support.gateway import REPO, gateway_env

TALLYHUB = [sys.executable, "-m", "adapters.cli.main"]
SECRET = "whsec_operator-chosen-secret-0042"


def all_event_text(ledger: Ledger) -> str:
    return "\n".join(
        json.dumps(n.state.decode(errors="replace") if isinstance(n.state, bytes) else str(n.state))
        for n in ledger.recorder.select_notifications(0, 10_000)
    )


def test_add_list_remove_keeps_the_secret_out_of_events_and_listings(ledger: Ledger) -> None:
    webhooks = Webhooks(ledger)
    added = webhooks.add_webhook("https://hooks.example.com/tallyhub", ["balance.low", "price.missing"])
    assert added.secret.startswith("whsec_") and len(added.secret) > 30
    chosen = webhooks.add_webhook("http://127.0.0.1:9000/in", ["credential.disabled"], SECRET)
    assert chosen.secret == SECRET
    listed = [w.plain() for w in webhooks.list_webhooks()]
    assert [w["id"] for w in listed] == [added.webhook.webhook_id, chosen.webhook.webhook_id]
    assert listed[0]["events"] == ["balance.low", "price.missing"]
    assert added.secret not in json.dumps(listed) and SECRET not in json.dumps(listed)
    assert added.secret not in all_event_text(ledger) and SECRET not in all_event_text(ledger)

    subscribers = LedgerSubscribers(ledger)
    [low] = subscribers.subscribed_to("balance.low")
    assert (low.webhook_id, low.url, low.secret) == (added.webhook.webhook_id, added.webhook.url, added.secret)
    assert [s.secret for s in subscribers.subscribed_to("credential.disabled")] == [SECRET]
    assert subscribers.subscribed_to("grant.expiring") == []

    webhooks.remove_webhook(added.webhook.webhook_id)
    assert subscribers.subscribed_to("balance.low") == []
    assert ledger.secret_store.get(added.webhook.secret_ref) is None
    with pytest.raises(NotFound):
        webhooks.remove_webhook(added.webhook.webhook_id)


@pytest.mark.parametrize(
    ("url", "events", "said"),
    [
        ("ftp://example.com/x", ["balance.low"], "http or https"),
        ("https://user:pw@example.com/x", ["balance.low"], "credentials"),
        ("https:///nohost", ["balance.low"], "host"),
        ("https://example.com/x", ["balance.lo"], "'balance.lo'"),
        ("https://example.com/x", [], "at least one"),
    ],
)
def test_bad_urls_and_event_names_are_refused_and_store_nothing(
    ledger: Ledger, url: str, events: list[str], said: str
) -> None:
    with pytest.raises(InvalidRequest, match=said):
        Webhooks(ledger).add_webhook(url, events)
    assert Webhooks(ledger).list_webhooks() == [] and ledger.secret_store.all() == [
        row for row in ledger.secret_store.all() if not row.ref.startswith("webhook:")
    ]


def test_master_key_rotation_keeps_webhook_secrets(ledger: Ledger) -> None:
    added = Webhooks(ledger).add_webhook("https://hooks.example.com/a", ["balance.low"])
    rotate_master(ledger)
    [subscription] = LedgerSubscribers(ledger).subscribed_to("balance.low")
    assert subscription.secret == added.secret


@dataclass
class Admin:
    client: TestClient
    key: str

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.client.request(
            method, "/admin/v1" + path, headers={"authorization": f"Bearer {self.key}"}, **kwargs
        )


@pytest.fixture
def admin() -> Iterator[Admin]:
    ledger = in_memory_ledger(clock=FakeClock())
    key = ledger.initialise()
    Accounts(ledger).create_account("acme")
    yield Admin(TestClient(create_app(build_services(Settings(), ledger=ledger), run_projections=False)), key)
    ledger.close()


def test_webhooks_over_the_admin_api(admin: Admin) -> None:
    made = admin.call("POST", "/webhooks", json={"url": "https://hooks.example.com/t", "events": ["balance.low"]})
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["secret"].startswith("whsec_") and body["events"] == ["balance.low"]
    listed = admin.call("GET", "/webhooks").json()
    assert listed == {"data": [{"id": body["id"], "url": body["url"], "events": ["balance.low"]}]}
    refused = admin.call("POST", "/webhooks", json={"url": "https://hooks.example.com/t", "events": ["nope"]})
    assert refused.status_code == 400 and "'nope'" in refused.json()["error"]["message"]
    assert admin.call("DELETE", f"/webhooks/{body['id']}").json()["removed"] is True
    gone = admin.call("DELETE", f"/webhooks/{body['id']}")
    assert gone.status_code == 404 and "error" in gone.json()
    assert admin.call("GET", "/webhooks").json() == {"data": []}


def test_alert_thresholds_over_the_admin_api(admin: Admin) -> None:
    set_ = admin.call("PUT", "/accounts/acme/alerts", json={"below": ["2.5", 10]})
    assert set_.status_code == 200, set_.text
    assert set_.json()["below"] == [
        {"amount": "10.000000000", "amount_nanocredits": 10 * 10**9},
        {"amount": "2.500000000", "amount_nanocredits": 2_500_000_000},
    ]
    assert admin.call("GET", "/accounts/acme/alerts").json() == set_.json()
    bad = admin.call("PUT", "/accounts/acme/alerts", json={"below": ["0"]})
    assert bad.status_code == 400
    assert admin.call("PUT", "/accounts/acme/alerts", json={"below": []}).json()["below"] == []


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> tuple[int, Any]:
    done = subprocess.run(
        [*TALLYHUB, *args, "--json"], capture_output=True, text=True, env=env, cwd=REPO, timeout=60, input=stdin
    )
    assert "Traceback" not in done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout)


def test_webhooks_and_alerts_from_the_command_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = gateway_env(data_dir, None)
    assert run(env, "init")[0] == 0 and run(env, "accounts", "create", "acme")[0] == 0

    status, added = run(
        env, "webhooks", "add", "https://hooks.example.com/cli", "--events", "balance.low,grant.expiring"
    )
    assert status == 0 and added["secret"].startswith("whsec_")
    status, chosen = run(
        env,
        "webhooks",
        "add",
        "http://127.0.0.1:9/x",
        "--events",
        "price.missing",
        "--secret-stdin",
        stdin=SECRET + "\n",
    )
    assert status == 0 and chosen["secret"] == SECRET
    status, listed = run(env, "webhooks", "list")
    assert [w["id"] for w in listed["data"]] == [added["id"], chosen["id"]]
    assert added["secret"] not in json.dumps(listed) and SECRET not in json.dumps(listed)
    status, refused = run(env, "webhooks", "add", "https://hooks.example.com/cli", "--events", "balance.low,oops")
    assert status == 1 and "'oops'" in refused["error"]["message"]
    assert run(env, "webhooks", "remove", chosen["id"])[1]["removed"] is True
    assert [w["id"] for w in run(env, "webhooks", "list")[1]["data"]] == [added["id"]]

    status, shown = run(env, "accounts", "alerts", "acme", "--below", "5", "--below", "0.5")
    assert status == 0 and [t["amount_nanocredits"] for t in shown["below"]] == [5 * 10**9, 500_000_000]
    assert run(env, "accounts", "alerts", "acme")[1] == shown
    assert run(env, "accounts", "alerts", "acme", "--clear")[1]["below"] == []

    with sqlite3.connect(data_dir / "tallyhub.sqlite") as db:  # nothing in the store holds a secret in clear
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            for row in db.execute(f"SELECT * FROM {table}"):
                assert added["secret"].encode() not in json.dumps([str(v) for v in row]).encode()
    ledger = build_ledger(Settings(data_dir=data_dir))
    try:
        assert added["secret"] not in all_event_text(ledger)
    finally:
        ledger.close()


def test_a_webhook_whose_secret_cannot_be_opened_is_left_out_not_fatal(ledger: Ledger) -> None:
    webhooks = Webhooks(ledger)
    broken = webhooks.add_webhook("https://hooks.example.com/broken", ["balance.low"]).webhook
    fine = webhooks.add_webhook("https://hooks.example.com/fine", ["balance.low"]).webhook
    ledger.secret_store.delete([broken.secret_ref])
    assert [s.webhook_id for s in LedgerSubscribers(ledger).subscribed_to("balance.low")] == [fine.webhook_id]


def test_secrets_status_counts_webhook_secrets_so_their_master_key_is_not_retirable(ledger: Ledger) -> None:
    added = Webhooks(ledger).add_webhook("https://hooks.example.com/a", ["balance.low"])
    status = secrets_status(ledger)
    assert f"webhook {added.webhook.webhook_id}" in status.in_use[status.newest_kid]
    assert status.newest_kid not in status.retirable_kids
