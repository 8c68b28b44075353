"""An auditor joins an export to what the API and the CLI say, by id, as written: a
request's ``x-request-id`` is its ``request_id`` in the request and ledger exports,
``/v1/me`` and the admin API; its account's id is the one ``accounts list --json``
shows, with the account's name beside it. And a serving gateway's data dir is its
owner's alone (0700, every file 0600), exports written over the admin API included."""

import csv
import json
import stat
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import MODEL, Served
from tests.support.gateway import cli


@pytest.fixture(scope="module")
def request_id(served: Served) -> str:
    client = openai.OpenAI(base_url=served.gateway.url + "/v1", api_key=served.api_key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Say something an auditor can join."}]
    )
    return raw.headers["x-request-id"]


def rows_of(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".csv":
        with open(path, newline="") as file:
            return list(csv.DictReader(file))
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_an_export_row_joins_the_api_and_the_cli_by_id(served: Served, request_id: str, tmp_path: Path) -> None:
    env = served.gateway.env
    listed = {row["name"]: row["account_id"] for row in cli(env, "accounts", "list")["data"]}
    me = httpx.get(f"{served.gateway.url}/v1/me", headers={"authorization": f"Bearer {served.api_key}"}).json()
    assert me["id"] == listed[served.account]
    mine = httpx.get(
        f"{served.gateway.url}/v1/me/requests/{request_id}", headers={"authorization": f"Bearer {served.api_key}"}
    ).json()
    assert mine["request_id"] == request_id
    receipt = served.gateway.admin_json("GET", f"/requests/{request_id}")
    assert (receipt["id"], receipt["account_id"]) == (request_id, listed[served.account])
    assert receipt["api_key_id"] == me["key"]["id"]
    hex_key = me["key"]["id"].replace("-", "")  # a key named by its hex is still shown by its dashed id
    caps = cli(env, "accounts", "caps", served.account, "--key", hex_key, "--month", "1000000")
    assert (caps["account_id"], caps["scope"]) == (listed[served.account], me["key"]["id"])

    cli(env, "export", "requests", "--format", "csv", "--out", str(tmp_path / "requests.csv"))
    cli(env, "export", "ledger", "--format", "jsonl", "--out", str(tmp_path / "ledger.jsonl"))
    [request] = [row for row in rows_of(tmp_path / "requests.csv") if row["request_id"] == request_id]
    assert (request["account_id"], request["account"]) == (listed[served.account], served.account)
    [charge] = [row for row in rows_of(tmp_path / "ledger.jsonl") if row["request_id"] == request_id]
    assert (charge["kind"], charge["account_id"], charge["account"]) == (
        "charge",
        listed[served.account],
        served.account,
    )
    assert int(request["charge_nanocredits"]) == -charge["amount_nanocredits"] > 0

    admin = served.gateway.admin_json("POST", "/exports", params={"kind": "ledger", "format": "csv"})
    assert listed[served.account] in admin["accounts"]
    assert admin["accounts"][listed[served.account]]["name"] == served.account
    assert served.gateway.admin_json("GET", f"/exports/{admin['export_id']}/manifest") == admin
    assert all(entry["export_id"].count("-") == 4 for entry in served.gateway.admin_json("GET", "/exports")["exports"])
    verified = cli(
        env, "verify", "--export", str(tmp_path / "requests.csv"), "--export", str(tmp_path / "ledger.jsonl")
    )
    assert verified["ok"], verified["problems"]


def test_a_serving_gateway_keeps_its_data_dir_to_its_owner(served: Served, request_id: str) -> None:
    data = Path(served.gateway.env["TALLYHUB_DATA_DIR"])
    served.gateway.admin_json("POST", "/exports", params={"kind": "requests", "format": "jsonl"})
    modes = {
        str(p.relative_to(data)): stat.S_IMODE(p.stat().st_mode)
        for p in data.rglob("*")
        if not p.name.startswith("serve-")
    }  # the test harness's own logs of the server's output
    assert stat.S_IMODE(data.stat().st_mode) == 0o700 and modes.pop("exports") == 0o700
    # a single-worker serve keeps its metrics in memory: no multiprocess files (with --workers N
    # they are private too: tests/e2e/test_metrics_and_access_log.py)
    assert not any(name.startswith("prometheus") for name in modes)
    assert "master.key" in modes and any(name.startswith("exports/") for name in modes)
    if "TALLYHUB_DATABASE_URL" not in served.gateway.env:
        assert {"tallyhub.sqlite", "tallyhub.sqlite-wal", "tallyhub-read-models.sqlite"} <= set(modes)
    assert {name: oct(m) for name, m in modes.items() if m != 0o600} == {}
