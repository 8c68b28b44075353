"""``tallyhub verify --from --to`` and ``POST /admin/v1/verify?from=&to=``: a window's report
names its window (``checked.window``) and what it does not check (``notes``), keeps every key
of the whole report, exits 1 (``ok`` false) naming a request doctored inside it; a window that
does not start before its end is refused naming ``from`` (the API: a 400 in its own shape);
without a window the report is the whole verify's, key for key."""

import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapters.bootstrap import build_services, in_memory_ledger
from adapters.cli.main import main
from adapters.http.app import create_app
from adapters.settings import Settings
from application.ledger import Ledger
from application.verify_window import NOT_CHECKED
from tests.benchmarks.audit_scale import prepare
from tests.integration.test_verify_window import DAY, START, Request, new_account, write

WHOLE_KEYS = {"events_up_to_position", "accounts", "charges", "request_records", "open_holds", "exports"}
DAY_ONE = {"from": "2026-03-02T00:00:00+00:00", "to": "2026-03-03T00:00:00+00:00"}


def three_days(ledger: Ledger) -> Request:
    """Four correct requests a day for three days, and one charged short on day 1 at 23:00."""
    account = new_account(ledger)
    for day in range(3):
        for hour in range(4):
            write(ledger, account, START + day * DAY + timedelta(hours=6 + hour), 100 + day + hour)
    return write(ledger, account, START + DAY + timedelta(hours=23), 400, short_charge=3)


# ------------------------------------------------------------------------------------ CLI


@pytest.fixture
def cli_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Request:
    """A SQLite store made by ``tallyhub init`` holding ``three_days``; returns the doctored request."""
    for name in [name for name in os.environ if name.startswith("TALLYHUB_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TALLYHUB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TALLYHUB_BILLING_MODE", "credits")
    assert main(["init", "--json"]) == 0
    services = build_services(Settings.from_env())
    try:
        doctored = three_days(prepare(services.ledger))
    finally:
        services.close()
    capsys.readouterr()
    return doctored


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    status = main(list(args))
    return status, capsys.readouterr().out


def test_the_cli_verifies_a_window_and_names_it(cli_store: Request, capsys: pytest.CaptureFixture[str]) -> None:
    status, out = cli(capsys, "verify", "--from", "2026-03-03", "--to", "2026-03-04", "--json")
    report = json.loads(out)
    assert status == 0 and report["ok"] is True and report["problems"] == []
    assert set(report["checked"]) >= WHOLE_KEYS
    assert report["checked"]["window"] == {"from": "2026-03-03T00:00:00+00:00", "to": "2026-03-04T00:00:00+00:00"}
    assert report["checked"]["request_records"] == report["checked"]["charges"] == 4
    assert NOT_CHECKED in report["notes"]

    last = report["checked"]["events_up_to_position"]
    status, out = cli(capsys, "verify", "--from", "2026-03-02T00:00:00+00:00", "--to", "2026-03-03")
    lines = out.splitlines()
    assert status == 1
    assert lines[0] == (
        "checked the 5 request records from 2026-03-02T00:00:00+00:00 to 2026-03-03T00:00:00+00:00: "
        f"5 charges, 0 refunds, 1 accounts (events up to position {last:,}) and 0 export files"
    )
    assert f"note: {NOT_CHECKED}" in lines and "FAILED: 1 problem(s)" in lines
    assert (
        lines[-1]
        == f"  - request {cli_store.request_id}: charged {cli_store.cost - 3} but its record says {cli_store.cost}"
    )


def test_the_cli_without_a_window_gives_the_whole_report(
    cli_store: Request, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = cli(capsys, "verify", "--json")
    report = json.loads(out)
    assert status == 1 and set(report["checked"]) == WHOLE_KEYS and report["notes"] == []
    assert report["checked"]["request_records"] == 13
    assert report["problems"] == [
        f"request {cli_store.request_id}: charged {cli_store.cost - 3} but its record says {cli_store.cost}"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2026-03-02", "--to", "2026-03-02"], "the verify window's start must be before its end"),
        (["--from", "2026-03-02", "--deep"], "--deep loads every account's whole history: run it without a window"),
    ],
)
def test_the_cli_refuses_a_window_it_cannot_verify(
    cli_store: Request, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    status, out = cli(capsys, "verify", *args, "--json")
    assert status == 1 and json.loads(out)["error"]["message"] == message
    status, out = cli(capsys, "verify", "--to", "yesterday", "--json")
    assert status == 2 and "--to" in json.loads(out)["error"]["message"]


# ------------------------------------------------------------------------------- admin API


@pytest.fixture
def admin() -> Iterator[tuple[TestClient, dict[str, str], Request]]:
    ledger = in_memory_ledger()
    admin_key = ledger.initialise()
    doctored = three_days(prepare(ledger))
    services = build_services(Settings(), ledger=ledger)
    yield TestClient(create_app(services, run_projections=False)), {"authorization": f"Bearer {admin_key}"}, doctored
    ledger.close()


def post_verify(admin: tuple[TestClient, dict[str, str], Request], **params: str) -> Any:
    client, headers, _ = admin
    return client.post("/admin/v1/verify", params=params, headers=headers)


def test_the_api_verifies_a_window(admin: tuple[TestClient, dict[str, str], Request]) -> None:
    doctored = admin[2]
    clean = post_verify(admin, **{"from": "2026-03-03T00:00:00Z"})
    assert clean.status_code == 200 and clean.json()["ok"] is True
    assert clean.json()["checked"]["window"] == {"from": "2026-03-03T00:00:00+00:00", "to": None}
    found = post_verify(admin, **{"from": "2026-03-02", "to": "2026-03-03"})
    assert found.status_code == 200 and found.json()["checked"]["window"] == DAY_ONE
    assert found.json()["ok"] is False and found.json()["problems"] == [
        f"request {doctored.request_id}: charged {doctored.cost - 3} but its record says {doctored.cost}"
    ]
    whole = post_verify(admin)
    assert whole.status_code == 200 and set(whole.json()["checked"]) == WHOLE_KEYS


@pytest.mark.parametrize(
    "params", [{"from": "2026-03-02", "to": "2026-03-02"}, {"from": "2026-03-03", "to": "2026-03-02"}, {"from": "x"}]
)
def test_the_api_refuses_a_bad_window_naming_from(
    admin: tuple[TestClient, dict[str, str], Request], params: dict[str, str]
) -> None:
    refused = post_verify(admin, **params)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "from" and error["type"] == "invalid_request_error"
