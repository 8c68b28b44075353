"""Replay, exports and verify end to end, on SQLite and on PostgreSQL: requests charged
through ``serve``, then ``tallyhub replay`` (dry run and ``--apply``, once), exports whose
rows sum to the balance movements, and ``tallyhub verify`` passing — and failing, naming
the row, once an export is edited."""

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.conftest import MODEL, Served
from tests.support.gateway import REPO, TALLYHUB, cli

NANO = 10**9


def price_file(path: Path, models: dict[str, dict[str, str]]) -> str:
    path.write_text(json.dumps({"models": models}))
    return str(path)


def run(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run([*TALLYHUB, *args, "--json"], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    return done.returncode, json.loads(done.stdout)


@pytest.fixture(scope="module")
def charged(served: Served) -> dict[str, Any]:
    client = openai.OpenAI(base_url=served.gateway.url + "/v1", api_key=served.api_key, max_retries=0)
    charges = []
    for words in ("one", "two more", "three more words", "and four more words"):
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": f"Say {words} for the auditors."}]
        )
        charges.append(int(raw.headers["x-tallyhub-charge-nanocredits"]))
    return {"charges": charges, "balance": served.gateway.balance(served.account)["balance"]}


def test_replay_original_doubled_apply_once_then_verify(
    served: Served, charged: dict[str, Any], tmp_path: Path
) -> None:
    env = served.gateway.env
    original = price_file(tmp_path / "original.json", {MODEL: {"input": "2", "output": "8"}})
    doubled = price_file(tmp_path / "doubled.json", {MODEL: {"input": "4", "output": "16"}})

    same = cli(env, "replay", "--prices", original)
    assert same["dry_run"] and same["charges"] == 4
    assert same["totals"]["difference"] == 0 and [line["difference"] for line in same["lines"]] == [0]
    assert same["totals"]["old"] == sum(charged["charges"])

    preview = cli(env, "replay", "--prices", doubled, "--account", served.account)
    assert [
        (line["account"], line["model"], line["charges"], line["old"], line["new"]) for line in preview["lines"]
    ] == [(served.account, MODEL, 4, sum(charged["charges"]), 2 * sum(charged["charges"]))]
    assert served.gateway.balance(served.account)["balance"] == charged["balance"]  # a dry run posts nothing
    over_http = served.gateway.admin_json(
        "POST", "/replays", params={"account": served.account}, content=(tmp_path / "doubled.json").read_bytes()
    )
    assert over_http["lines"] == preview["lines"] and over_http["dry_run"]

    applied = cli(env, "replay", "--prices", doubled, "--apply")
    assert applied["applied"] and applied["sequence"] == 1
    assert [(a["account"], a["requested"], a["applied"], a["posted"]) for a in applied["adjustments"]] == [
        (served.account, -sum(charged["charges"]), -sum(charged["charges"]), True)
    ]
    assert served.gateway.balance(served.account)["balance"] == charged["balance"] - sum(charged["charges"])
    status, report = run(env, "verify")
    assert status == 0 and report["ok"], report["problems"]

    again = cli(env, "replay", "--prices", doubled, "--apply")
    assert not again["applied"] and again["adjustments"] == [] and again["totals"]["difference"] == 0
    assert served.gateway.balance(served.account)["balance"] == charged["balance"] - sum(charged["charges"])
    assert [r["sequence"] for r in served.gateway.admin_json("GET", "/replays")["replays"]] == [1]

    back = cli(env, "replay", "--prices", original, "--apply")  # undo: computed against the doubled prices
    assert back["totals"]["difference"] == -sum(charged["charges"])
    assert served.gateway.balance(served.account)["balance"] == charged["balance"]
    assert run(env, "verify")[0] == 0


@pytest.mark.parametrize(
    "models, message",
    [
        (
            {MODEL: {"input": "2", "output": "8"}, "mystery/model": {"input": "1", "output": "1"}},
            "no provider 'mystery' is registered",
        ),
        ({MODEL: {"input": "-2", "output": "8"}}, "must not be negative"),
        ({"openai/other": {"input": "2", "output": "8"}}, f"no price for models charged in the window: {MODEL}"),
    ],
)
def test_bad_price_files_are_refused_and_post_nothing(
    served: Served, charged: dict[str, Any], tmp_path: Path, models: dict[str, Any], message: str
) -> None:
    balance = served.gateway.balance(served.account)["balance"]
    status, out = run(served.gateway.env, "replay", "--prices", price_file(tmp_path / "bad.json", models), "--apply")
    assert status == 1 and message in out["error"]["message"]
    assert served.gateway.balance(served.account)["balance"] == balance


def test_a_malformed_file_and_an_empty_window_are_clear_errors(
    served: Served, charged: dict[str, Any], tmp_path: Path
) -> None:
    env = served.gateway.env
    (tmp_path / "broken.json").write_text('{"models": {')
    status, out = run(env, "replay", "--prices", str(tmp_path / "broken.json"))
    assert status == 1 and "not valid JSON" in out["error"]["message"]
    ok = price_file(tmp_path / "ok.json", {MODEL: {"input": "2", "output": "8"}})
    status, out = run(env, "replay", "--prices", ok, "--from", "2099-01-01T00:00:00Z", "--apply")
    assert status == 1 and out["error"]["code"] == "empty_window"
    response = served.gateway.admin(
        "POST", "/replays", params={"from": "2099-01-01T00:00:00Z"}, content=(tmp_path / "ok.json").read_bytes()
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "empty_window"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_exports_sum_to_the_balances_and_chain_onto_each_other(
    served: Served, charged: dict[str, Any], tmp_path: Path
) -> None:
    env = served.gateway.env
    statement = cli(env, "statement", served.account)
    entries = statement["entries"]
    cut = entries[2]["at"]  # a window boundary inside the history

    first = cli(env, "export", "ledger", "--to", cut, "--format", "csv", "--out", str(tmp_path / "a.csv"))
    second = cli(env, "export", "ledger", "--from", cut, "--format", "jsonl", "--out", str(tmp_path / "b.jsonl"))
    assert second["chain"]["seed"] == first["chain"]["head"] and second["previous_export"] == first["export_id"]
    assert first["sha256"] == sha256(tmp_path / "a.csv") and second["sha256"] == sha256(tmp_path / "b.jsonl")
    assert first["rows"] + second["rows"] >= len(entries)

    rows = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    mine = [row for row in rows if row["account_id"] == statement["account_id"]]
    assert {row["account"] for row in mine} == {served.account}
    account = second["accounts"][statement["account_id"]]
    window = cli(env, "statement", served.account, "--from", cut)
    assert (
        sum(row["amount_nanocredits"] for row in mine)
        == account["closing"] - account["opening"]
        == (window["closing_balance"] - window["opening_balance"])
    )
    assert account["closing"] == served.gateway.balance(served.account)["balance"]
    assert sum(row["amount_nanocredits"] for row in rows) == second["totals"]["net"]
    assert [row["position"] for row in rows] == sorted(row["position"] for row in rows)

    status, report = run(env, "verify", "--export", str(tmp_path / "a.csv"), "--export", str(tmp_path / "b.jsonl"))
    assert status == 0 and report["ok"], report["problems"]
    assert len(report["checked"]["exports"]) >= 2


def test_editing_an_export_makes_verify_fail_and_name_the_row(
    served: Served, charged: dict[str, Any], tmp_path: Path
) -> None:
    env = served.gateway.env
    csv_path, jsonl_path = tmp_path / "edit.csv", tmp_path / "edit.jsonl"
    cli(env, "export", "ledger", "--format", "csv", "--out", str(csv_path))
    manifest = cli(env, "export", "ledger", "--format", "jsonl", "--out", str(jsonl_path))

    lines = csv_path.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace(",charge,-", ",charge,-1", 1)  # one byte more in row 3's amount
    assert ",charge,-1" in lines[3]
    csv_path.write_text("".join(lines))
    status, report = run(env, "verify", "--export", str(csv_path))
    assert status == 1 and not report["ok"]
    assert any("edit.csv: row 3 " in problem and "hash-chain" in problem for problem in report["problems"])
    assert any("edit.csv: the file's SHA-256" in problem for problem in report["problems"])

    # An editor who also recomputes every link, the digest and the manifest is still caught.
    from adapters.exports.formats import JsonlFormat, link

    fmt, chain, out = JsonlFormat(), manifest["chain"]["seed"], []
    for number, line in enumerate(jsonl_path.read_bytes().splitlines(keepends=True), start=1):
        row = json.loads(line)
        row.pop("chain")
        if number == 2:
            row["amount_nanocredits"] -= 1
        content = fmt.content(row)
        chain = link(chain, content)
        out.append(fmt.line(content, chain))
    jsonl_path.write_bytes(b"".join(out))
    manifest.update(sha256=sha256(jsonl_path), chain={**manifest["chain"], "head": chain})
    Path(str(jsonl_path) + ".manifest.json").write_text(json.dumps(manifest))
    status, report = run(env, "verify", "--export", str(jsonl_path))
    assert status == 1
    assert any(
        "edit.jsonl: row 2 (position" in problem and "amount_nanocredits" in problem for problem in report["problems"]
    )
    assert any(
        "edit.jsonl: the manifest's sha256 is not what the export log recorded" in problem
        for problem in report["problems"]
    )
    jsonl_path.unlink()  # leave the recorded exports that still verify
    csv_path.unlink()


def test_exports_over_the_admin_api_are_streamed_with_their_manifest(served: Served, charged: dict[str, Any]) -> None:
    for kind in ("requests", "usage", "ledger"):
        manifest = served.gateway.admin_json("POST", "/exports", params={"kind": kind, "format": "jsonl"})
        response = served.gateway.admin("GET", f"/exports/{manifest['export_id']}")
        assert response.status_code == 200
        assert hashlib.sha256(response.content).hexdigest() == manifest["sha256"] == response.headers["x-export-sha256"]
        assert len(response.content.splitlines()) == manifest["rows"]
        assert served.gateway.admin_json("GET", f"/exports/{manifest['export_id']}/manifest") == manifest
    requests = served.gateway.admin_json("POST", "/exports", params={"kind": "requests", "format": "csv"})
    assert requests["totals"]["charge_nanocredits"] >= sum(charged["charges"])
    assert served.gateway.admin("GET", "/exports/nope").status_code == 404
    verified = served.gateway.admin_json("POST", "/verify")
    assert verified["ok"], verified["problems"]
