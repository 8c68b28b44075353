"""The audit log on SQLite and PostgreSQL: a CLI command is a row whose actor is ``cli``, an
admin API call one whose actor is ``admin:<fingerprint>`` of the key it presented, both as
the ledger's own events record them; the page's filters; ``tallyhub projections rebuild
audit`` gives the very rows the live projection wrote, and ``projections status`` lists it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import date
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from streamlit.testing.v1 import AppTest

from adapters.cli.main import main
from adapters.http.app import create_app
from adapters.services import Services
from application.acting import CLI, admin_actor
from tests.dashboard.conftest import ENV
from tests.dashboard.console_fixtures import (  # noqa: F401  (fixtures)
    actors,
    application,
    console_store,
    signed_in_page,
)
from tests.dashboard.seed import Seeded

PAGE = "console/pages/audit.py"
NANO = 10**9


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., Any]:
    """``cli(store, *args)``: ``tallyhub ARGS --json`` in this process on ``store``; its JSON."""

    def run(store: Seeded, *args: str, status: int = 0) -> Any:
        for name in ENV:
            monkeypatch.delenv(name, raising=False)
        for name, value in {**store.env, "TALLYHUB_BILLING_MODE": "credits"}.items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        exit_status = main([*args, "--json"])
        out = capsys.readouterr().out
        assert exit_status == status, out
        return json.loads(out)

    return run


@pytest.fixture
def acted(
    console_store: Seeded,  # noqa: F811
    application: Callable[[Seeded], Services],  # noqa: F811
    cli: Callable[..., Any],
) -> Iterator[tuple[Seeded, Services]]:
    """acme created by the CLI with 5 starter credits and a key; 1.5 credits granted through
    the admin API; the read models caught up."""
    store = console_store
    cli(store, "accounts", "create", "acme", "--starter-credits", "5")
    cli(store, "keys", "issue", "acme", "--name", "ci")
    services = application(store)
    client = TestClient(create_app(services, run_projections=False))
    response = client.post(
        "/admin/v1/accounts/acme/grants",
        json={"amount": "1.5", "reason": "top-up"},
        headers={"authorization": f"Bearer {store.admin_key}"},
    )
    assert response.status_code == 201, response.text
    services.read_models.runner.catch_up()
    yield store, services
    client.close()


def audit_table(app: AppTest) -> pd.DataFrame:
    tables = [t.value for t in app.dataframe if "summary" in t.value.columns]
    return tables[0] if tables else pd.DataFrame(columns=["actor", "action", "target", "summary"])


def rows_of(app: AppTest) -> list[tuple[str, str, str, str]]:
    table = audit_table(app)
    return [tuple(r) for r in table[["actor", "action", "target", "summary"]].itertuples(index=False, name=None)]


def test_a_cli_action_names_cli_and_an_admin_api_action_the_admin_keys_fingerprint(
    acted: tuple[Seeded, Services],
    signed_in_page: Callable[..., AppTest],  # noqa: F811
) -> None:
    store, services = acted
    admin = admin_actor(store.admin_key)
    acme = services.ledger.get_account("acme").id
    assert actors(services, acme) == [CLI, CLI, admin]  # what the ledger itself recorded

    app = signed_in_page(store, PAGE)

    assert [t.value for t in app.title] == ["Audit log"]
    shown = rows_of(app)
    key_row = next(r for r in shown if r[1] == "key.issued")
    assert shown == [  # newest first
        (admin, "account.credit_granted", "acme", "granted 1.500000000 credits; top-up"),
        key_row,
        (CLI, "account.credit_granted", "acme", "granted 5.000000000 credits; starter credits"),
        (CLI, "account.created", "acme", "account acme created"),
        ("unrecorded", "deployment.initialised", "deployment", "store initialised"),
    ]
    assert key_row[0] == CLI and key_row[2].startswith("acme / key ") and "'ci'" in key_row[3]
    assert "at (UTC)" in audit_table(app).columns
    assert app.session_state["audit_matching"] == 5


def test_the_filters_select_by_actor_action_target_and_time(
    acted: tuple[Seeded, Services],
    signed_in_page: Callable[..., AppTest],  # noqa: F811
) -> None:
    store, _ = acted
    admin = admin_actor(store.admin_key)
    app = signed_in_page(store, PAGE)

    app.selectbox(key="audit_actor").select(admin).run()
    assert [r[:2] for r in rows_of(app)] == [(admin, "account.credit_granted")]
    app.selectbox(key="audit_actor").select(CLI).run()
    assert {r[0] for r in rows_of(app)} == {CLI} and len(rows_of(app)) == 3

    app.selectbox(key="audit_actor").select("any").run()
    app.selectbox(key="audit_action").select("account").run()  # every account.* action
    assert [r[1] for r in rows_of(app)] == ["account.credit_granted", "account.credit_granted", "account.created"]
    app.selectbox(key="audit_action").select("key.issued").run()
    assert [r[1] for r in rows_of(app)] == ["key.issued"]

    app.selectbox(key="audit_action").select("any").run()
    app.text_input(key="audit_target").input("ACME / KEY").run()  # part of the target, any case
    assert [r[1] for r in rows_of(app)] == ["key.issued"]
    app.text_input(key="audit_target").input("nobody").run()
    assert rows_of(app) == [] and app.session_state["audit_rows"] == 0
    assert [i.value for i in app.info] == ["No admin action matches these filters."]

    app.text_input(key="audit_target").input("").run()
    app.selectbox(key="audit_range").select("Last 24 hours").run()
    assert len(rows_of(app)) == 5
    app.selectbox(key="audit_range").select("Custom days").run()
    app.date_input(key="audit_days").set_value((date(2020, 1, 1), date(2020, 1, 31))).run()
    assert rows_of(app) == []

    app.selectbox(key="audit_range").select("All time").run()
    app.selectbox(key="audit_limit").select(50).run()
    assert len(rows_of(app)) == 5 and not app.exception


def test_a_rebuild_gives_the_rows_the_live_projection_wrote_and_status_lists_it(
    acted: tuple[Seeded, Services], cli: Callable[..., Any]
) -> None:
    store, services = acted
    view = services.read_models.audit
    assert view is not None
    live = [asdict(e) for e in view.list_entries(limit=1000)]
    assert len(live) == 5

    cli(store, "projections", "rebuild", "audit")

    assert [asdict(e) for e in view.list_entries(limit=1000)] == live
    status = {row["name"]: row for row in cli(store, "projections", "status")["data"]}
    assert status["audit"]["state"] == "running" and status["audit"]["lag"] == 0


def test_the_cli_and_the_admin_api_list_the_same_rows_with_the_same_filters(
    acted: tuple[Seeded, Services], cli: Callable[..., Any]
) -> None:
    store, services = acted
    admin = admin_actor(store.admin_key)

    everything = cli(store, "audit")["data"]
    assert [(r["actor"], r["action"]) for r in everything] == [
        (admin, "account.credit_granted"),
        (CLI, "key.issued"),
        (CLI, "account.credit_granted"),
        (CLI, "account.created"),
        (None, "deployment.initialised"),
    ]
    assert [r["action"] for r in cli(store, "audit", "--actor", "cli", "--action", "account")["data"]] == [
        "account.credit_granted",
        "account.created",
    ]
    assert [r["action"] for r in cli(store, "audit", "--actor", "unrecorded")["data"]] == ["deployment.initialised"]
    assert len(cli(store, "audit", "--target", "ACME", "--limit", "2")["data"]) == 2
    assert cli(store, "audit", "--since", "2999-01-01T00:00:00Z")["data"] == []
    refused = cli(store, "audit", "--action", "nonsense", status=1)
    assert (
        refused["error"]["type"] == "invalid_request_error"
        and "unknown action 'nonsense'" in refused["error"]["message"]
    )

    client = TestClient(create_app(services, run_projections=False))
    headers = {"authorization": f"Bearer {store.admin_key}"}
    answer = client.get("/admin/v1/audit", params={"actor": admin}, headers=headers)
    assert answer.status_code == 200
    assert answer.json()["data"] == [everything[0]]
    assert client.get("/admin/v1/audit", headers=headers).json()["data"] == everything
    assert client.get("/admin/v1/audit", params={"until": everything[-1]["at"]}, headers=headers).json() == {"data": []}
    bad = client.get("/admin/v1/audit", params={"since": "yesterday"}, headers=headers)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "since"
    assert client.get("/admin/v1/audit", params={"action": "nope"}, headers=headers).status_code == 400
    assert client.get("/admin/v1/audit").status_code == 401
    client.close()
