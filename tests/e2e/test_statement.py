"""The account statement end to end, on SQLite and on PostgreSQL: a grant, requests
charged through ``serve``, a grant over the admin API and an adjustment through the CLI;
then ``tallyhub statement`` and ``GET /admin/v1/accounts/{account}/statement`` say the
same thing, close at the balance, and any window reconciles to the nanocredit."""

import subprocess
from typing import Any
from uuid import UUID

import httpx
import openai
import pytest

from tests.e2e.conftest import MODEL, Served
from tests.support.gateway import TALLYHUB, cli

NANO = 10**9
MESSAGES = [{"role": "user", "content": "Say hello to the statement."}]


@pytest.fixture(scope="module")
def history(served: Served) -> dict[str, Any]:
    """Movements of every kind the gateway makes; returns the charges the responses announced."""
    client = openai.OpenAI(base_url=served.gateway.url + "/v1", api_key=served.api_key, max_retries=0)
    charges: dict[UUID, int] = {}
    for words in ("one", "two more", "and three more words"):
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": f"Say {words} to the statement."}]
        )
        charges[UUID(raw.headers["x-request-id"])] = int(raw.headers["x-tallyhub-charge-nanocredits"])
    served.gateway.admin_json(
        "POST",
        f"/accounts/{served.account}/grants",
        json={"amount": "2.5", "reason": "top-up", "idempotency_key": "stmt-1"},
    )
    cli(served.gateway.env, "credits", "adjust", served.account, "-0.25", "--reason", "e2e correction")
    return {"charges": charges}


def statement_over_http(served: Served, **window: str) -> dict[str, Any]:
    params = {("from" if key == "since" else "to"): value for key, value in window.items()}
    return served.gateway.admin_json("GET", f"/accounts/{served.account}/statement", params=params)


def statement_over_cli(served: Served, **window: str) -> dict[str, Any]:
    flags = [arg for key, value in window.items() for arg in ("--from" if key == "since" else "--to", value)]
    return cli(served.gateway.env, "statement", served.account, *flags)


def test_the_statement_lists_every_movement_and_closes_at_the_balance(served: Served, history: dict[str, Any]) -> None:
    statement = statement_over_cli(served)
    balance = cli(served.gateway.env, "balance", served.account)
    entries = statement["entries"]

    assert statement["closing_balance"] == balance["balance"] == served.gateway.balance(served.account)["balance"]
    assert statement["opening_balance"] == 0 and statement["from"] is None and statement["to"] is None
    assert sum(e["amount"] for e in entries) == statement["closing_balance"] - statement["opening_balance"]
    running = 0
    for entry in entries:
        running += entry["amount"]
        assert entry["balance"] == running
    assert [e["position"] for e in entries] == sorted({e["position"] for e in entries})

    assert [(e["kind"], e["amount"], e["reason"]) for e in entries if e["kind"] != "charge"] == [
        ("grant", 100 * NANO, "e2e"),
        ("grant", 2_500_000_000, "top-up"),
        ("adjustment", -250_000_000, "e2e correction"),
    ]
    assert {UUID(e["request_id"]): -e["amount"] for e in entries if e["kind"] == "charge"} == history["charges"]
    assert all(charge > 0 for charge in history["charges"].values())
    assert all(e["held"] >= -e["amount"] and e["uncollected"] == 0 for e in entries if e["kind"] == "charge")

    totals = statement["totals"]
    assert {kind: t["count"] for kind, t in totals.items()} == {
        "grant": 2,
        "adjustment": 1,
        "refund": 0,
        "charge": 3,
        "expiry": 0,
    }
    assert totals["charge"]["amount"] == -sum(history["charges"].values())
    assert sum(t["amount"] for t in totals.values()) == statement["net"] == balance["balance"]
    assert (balance["granted_total"], balance["charged_total"], balance["adjusted_total"]) == (
        totals["grant"]["amount"],
        -totals["charge"]["amount"],
        totals["adjustment"]["amount"],
    )
    assert statement["closing_balance_credits"] == balance["balance_credits"]


def test_a_window_reconciles_exactly_and_the_cli_and_the_admin_api_agree(
    served: Served, history: dict[str, Any]
) -> None:
    everything = statement_over_cli(served)["entries"]
    since, until = everything[1]["at"], everything[-1]["at"]  # from the first charge; the adjustment excluded

    window = statement_over_cli(served, since=since, until=until)
    assert window == statement_over_http(served, since=since, until=until)
    assert statement_over_cli(served) == statement_over_http(served)

    assert window["entries"] == everything[1:-1]
    assert window["opening_balance"] == everything[0]["balance"]
    assert window["closing_balance"] == everything[-2]["balance"]
    assert sum(e["amount"] for e in window["entries"]) == window["closing_balance"] - window["opening_balance"]
    assert window["net"] == window["closing_balance"] - window["opening_balance"]
    assert (window["first_position"], window["last_position"]) == (
        everything[1]["position"],
        everything[-2]["position"],
    )

    later = statement_over_cli(served, since=until)
    assert [e["kind"] for e in later["entries"]] == ["adjustment"]
    assert later["opening_balance"] == window["closing_balance"]
    assert later["closing_balance"] == served.gateway.balance(served.account)["balance"]


def test_the_human_statement_shows_each_row_and_both_balances(served: Served, history: dict[str, Any]) -> None:
    done = subprocess.run(
        [*TALLYHUB, "statement", served.account], env=served.gateway.env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    balance = served.gateway.balance(served.account)
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"statement of {served.account} ")
    assert lines[1].split() == ["opening", "balance", "0.000000000"]
    assert [line.split()[2] for line in lines[2:8]] == ["grant", "charge", "charge", "charge", "grant", "adjustment"]
    assert lines[8].split() == ["closing", "balance", balance["balance_credits"]]
    assert "e2e correction" in lines[7] and "-0.250000000" in lines[7]


def test_bad_statement_requests_are_refused_clearly(served: Served) -> None:
    env = served.gateway.env
    assert cli(env, "statement", "nobody", check=False)["error"]["code"] == "account_not_found"
    inverted = cli(
        env, "statement", served.account, "--from", "2030-01-02T00:00:00Z", "--to", "2030-01-01", check=False
    )
    assert inverted["error"]["code"] == "invalid_request"
    bad_time = subprocess.run(
        [*TALLYHUB, "statement", served.account, "--from", "yesterday"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad_time.returncode == 2 and "not an ISO 8601 time" in bad_time.stderr

    gateway = served.gateway
    assert gateway.admin("GET", "/accounts/nobody/statement").status_code == 404
    refused = gateway.admin(
        "GET",
        f"/accounts/{served.account}/statement",
        params={"from": "2030-01-02T00:00:00Z", "to": "2030-01-01T00:00:00Z"},
    )
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_request"
    assert (
        gateway.admin("GET", f"/accounts/{served.account}/statement", params={"from": "yesterday"}).status_code == 400
    )
    unauthorised = httpx.get(
        f"{gateway.url}/admin/v1/accounts/{served.account}/statement",
        headers={"authorization": f"Bearer {served.api_key}"},
        timeout=30,
    )  # a user key is no admin key
    assert unauthorised.status_code == 401
