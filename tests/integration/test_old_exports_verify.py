"""Exports written before ids were dashed, before the ``account`` column and before CSV
formula cells were escaped (tests/fixtures/old_format_exports/, made by its make.py at
93cefe9) still verify: their hash chains are recomputed from the rows as written, and
their ledger rows are compared with the ledger in the layout their manifest names."""

import shutil
from pathlib import Path

import pytest

from adapters.bootstrap import build_services, initialise
from adapters.cli.audit_commands import run_verify
from adapters.exports.checks import check_export
from adapters.settings import Settings

FIXTURE = Path(__file__).parent.parent / "fixtures" / "old_format_exports"
MASTER_KEY = "dGFsbHlodWItb2xkLWV4cG9ydHMtZml4dHVyZS1rZXk"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(FIXTURE / "store", data)
    initialise(Settings(data_dir=data, master_key=MASTER_KEY))  # the read models, rebuilt from the events
    return data


def test_old_layout_exports_still_verify(data_dir: Path) -> None:
    services = build_services(Settings(data_dir=data_dir, master_key=MASTER_KEY))
    try:
        files = [data_dir / "ledger.csv", data_dir / "ledger.jsonl"]
        assert "93233d390a9251b4a40c2faf7f5d8191" in files[0].read_text()  # hex ids: the old layout
        assert ',"=HYPERLINK(' in files[0].read_text()  # an unescaped formula cell, as it was written
        for path in files:
            assert check_export(services, path) == []
        report = run_verify(services, files)
        assert report["ok"], report["problems"]
        assert {str(p.resolve()) for p in files} <= set(report["checked"]["exports"])
    finally:
        services.close()


def test_an_edited_old_layout_export_still_fails(data_dir: Path) -> None:
    path = data_dir / "ledger.csv"
    path.write_text(path.read_text().replace(",5000000000,5000000000,", ",5000000001,5000000000,"))
    services = build_services(Settings(data_dir=data_dir, master_key=MASTER_KEY))
    try:
        problems = check_export(services, path)
    finally:
        services.close()
    assert any("row 1" in problem and "hash-chain" in problem for problem in problems)
    assert any("amount_nanocredits" in problem for problem in problems)
