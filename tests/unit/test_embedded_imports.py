"""SQLite (embedded) mode never imports psycopg, its pool or eventsourcing's PostgreSQL module:
they cost about 380 M instructions on every start (issue 21, docs/performance.md). The
PostgreSQL classes import them where they are used (adapters/persistence/side_tables.py,
event_reads_postgres.py, fence.py, the delivery, response and secret stores)."""

import json
import os
import subprocess
import sys
from pathlib import Path

POSTGRES_ONLY = ("psycopg", "psycopg_pool", "eventsourcing.postgres")


def _loaded(probe: str, data_dir: Path) -> list[str]:
    env = {**os.environ, "TALLYHUB_DATA_DIR": str(data_dir)}
    env.pop("TALLYHUB_DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, check=True, env=env)
    modules = json.loads(done.stdout.splitlines()[-1])
    return [m for m in modules if m.split(".")[0] in POSTGRES_ONLY or m.startswith(POSTGRES_ONLY)]


def _initialised(tmp_path: Path) -> Path:
    env = {**os.environ, "TALLYHUB_DATA_DIR": str(tmp_path)}
    env.pop("TALLYHUB_DATABASE_URL", None)
    probe = "from adapters.cli.main import main; raise SystemExit(main(['init', '--json']))"
    subprocess.run([sys.executable, "-c", probe], capture_output=True, check=True, env=env)
    return tmp_path


def test_an_embedded_command_imports_no_postgres_module(tmp_path: Path) -> None:
    probe = (
        "import sys, json\n"
        "from adapters.cli.main import main\n"
        "assert main(['accounts', 'list', '--json']) == 0\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    assert _loaded(probe, _initialised(tmp_path)) == []


def test_building_the_services_in_sqlite_mode_imports_no_postgres_module(tmp_path: Path) -> None:
    probe = (
        "import sys, json\n"
        "from adapters.bootstrap import build_services\n"
        "from adapters.settings import Settings\n"
        "services = build_services(Settings.from_env())\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    assert _loaded(probe, _initialised(tmp_path)) == []
