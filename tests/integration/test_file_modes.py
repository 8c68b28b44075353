"""The data dir holds the whole ledger, the sealed secrets and the key that opens them:
``init`` creates it 0700 with every file in it 0600 (the SQLite databases and their WAL
and shared-memory files included), exports and their manifests are written 0600, and an
install made before (a 0755 data dir, 0644 databases and exports) is tightened on start,
with a log line saying so."""

import logging
import os
import stat
from pathlib import Path

import pytest

from adapters.bootstrap import build_services, initialise
from adapters.exports.exporter import create_export, manifest_path
from adapters.files import private_dir
from adapters.settings import Settings


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def tallyhub_files(data_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(data_dir)): mode(p) for p in sorted(data_dir.rglob("*"))}


def test_init_and_a_session_write_nothing_others_can_read(tmp_path: Path) -> None:
    data = tmp_path / "deploy" / "data"  # its parent is created too
    settings = Settings(data_dir=data)
    old_umask = os.umask(0o022)  # the usual umask: files 0644 unless created otherwise
    try:
        initialise(settings)
        services = build_services(settings)
        try:
            services.accounts.create_account("acme")
            services.accounts.grant_credits("acme", 10**9, "welcome")
            services.read_models.runner.catch_up()
            exports = private_dir(data / "exports")  # as POST /admin/v1/exports makes it
            create_export(services, "ledger", None, None, "csv", exports / "ledger.csv")
            create_export(services, "requests", None, None, "jsonl", tmp_path / "requests.jsonl")  # --out elsewhere
            files = tallyhub_files(data)  # while the databases are open: their -wal and -shm exist
        finally:
            services.close()
    finally:
        os.umask(old_umask)
    assert mode(data) == 0o700 and mode(data.parent) == 0o700
    assert files["exports"] == 0o700
    assert {
        "tallyhub.sqlite",
        "tallyhub.sqlite-wal",
        "tallyhub-read-models.sqlite",
        "master.key",
        "exports/ledger.csv",
        "exports/ledger.csv.manifest.json",
    } <= set(files)
    assert {name: m for name, m in files.items() if name != "exports" and m != 0o600} == {}
    assert mode(tmp_path / "requests.jsonl") == 0o600 and mode(manifest_path(tmp_path / "requests.jsonl")) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_an_existing_install_is_tightened_on_start_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    initialise(settings)
    services = build_services(settings)
    services.accounts.create_account("acme")
    (data / "exports").mkdir(mode=0o755)
    create_export(services, "ledger", None, None, "csv", data / "exports" / "ledger.csv")
    services.close()
    loose = [
        data / "tallyhub.sqlite",
        data / "tallyhub-read-models.sqlite",
        data / "exports" / "ledger.csv",
        data / "exports" / "ledger.csv.manifest.json",
    ]
    for path in loose:  # as an install made before this release left them
        path.chmod(0o644)
    for folder in (data, data / "exports"):
        folder.chmod(0o755)

    with caplog.at_level(logging.WARNING, logger="tallyhub.files"):
        services = build_services(settings)
        services.close()
    assert mode(data) == 0o700 and mode(data / "exports") == 0o700
    assert [mode(path) for path in loose] == [0o600] * len(loose)
    assert f"{data} was mode 0755 (others could read it); tightened to 0700" in caplog.text
    assert f"{data / 'tallyhub.sqlite'} was mode 0644 (others could read it); tightened to 0600" in caplog.text


def test_nothing_is_loosened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    initialise(Settings(data_dir=data))
    kept = private_dir(data / "exports") / "signed-off.csv"
    kept.write_text("read only\n")
    kept.chmod(0o400)
    build_services(Settings(data_dir=data)).close()
    assert mode(kept) == 0o400
