"""Every ``tallyhub`` failure is one line (``--json``: one ``{"error": {...}}`` document on
stdout) and a non-zero exit, never a traceback unless ``--debug`` asks for it; an admin
key too short to be secret refuses to start anything."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.settings import MIN_ADMIN_KEY_LENGTH, Settings, SettingsError
from tests.support.gateway import REPO, gateway_env

TALLYHUB = [sys.executable, "-m", "adapters.cli.main"]


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TALLYHUB, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = gateway_env(tmp_path / "data", None)
    assert run(env, "init", "--json").returncode == 0
    return env


def only_error(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    document = json.loads(done.stdout)  # exactly one JSON document
    assert set(document) == {"error"} and set(document["error"]) == {"message", "type", "code"}
    assert "Traceback" not in done.stdout + done.stderr
    return document["error"]


def test_an_unexpected_failure_is_one_json_error_not_a_traceback(env: dict[str, str]) -> None:
    Path(env["TALLYHUB_DATA_DIR"], "tallyhub.sqlite").write_bytes(b"not a database" * 400)
    done = run(env, "accounts", "list", "--json")
    assert done.returncode == 1
    assert only_error(done) == {
        "message": "DatabaseError: file is not a database",
        "type": "server_error",
        "code": "internal_error",
    }
    plain = run(env, "accounts", "list")
    assert plain.returncode == 1 and plain.stderr == "error: DatabaseError: file is not a database\n"
    debug = run(env, "accounts", "list", "--debug")
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr


def test_bad_arguments_are_a_json_error_with_exit_2(env: dict[str, str]) -> None:
    done = run(env, "statement", "acme", "--from", "0001-01-01T00:00:00+14:00", "--json")
    assert done.returncode == 2
    error = only_error(done)
    assert error["code"] == "invalid_arguments" and "--from" in error["message"]
    missing = run(env, "balance", "--json")
    assert missing.returncode == 2 and only_error(missing)["code"] == "invalid_arguments"


@pytest.mark.parametrize("grace", ["1" + "0" * 30, "2592001", "-1", "1e3"])
def test_a_grace_period_beyond_30_days_or_not_whole_seconds_is_refused_before_anything_runs(
    env: dict[str, str], grace: str
) -> None:
    for command in (["keys", "rotate", "some-key"], ["providers", "rotate-credential", "openai", "--api-key-stdin"]):
        done = run(env, *command, "--grace-seconds", grace, "--json")
        assert done.returncode == 2 and "Traceback" not in done.stderr
        error = only_error(done)
        assert error["code"] == "invalid_arguments" and "grace period" in error["message"]


def test_a_ledger_error_keeps_its_code_and_gets_its_type(env: dict[str, str]) -> None:
    done = run(env, "balance", "nobody", "--json")
    assert done.returncode == 1
    error = only_error(done)
    assert error["code"] == "account_not_found" and error["type"] == "invalid_request_error"


def test_a_short_admin_key_refuses_to_start(env: dict[str, str]) -> None:
    short = {**env, "TALLYHUB_ADMIN_KEY": "x" * (MIN_ADMIN_KEY_LENGTH - 1)}
    for command in (["serve", "--port", "1"], ["accounts", "list"]):
        done = run(short, *command, "--json")
        assert done.returncode == 1
        error = only_error(done)
        assert error["code"] == "invalid_setting" and "TALLYHUB_ADMIN_KEY" in error["message"]
    assert run({**env, "TALLYHUB_ADMIN_KEY": "x" * MIN_ADMIN_KEY_LENGTH}, "accounts", "list", "--json").returncode == 0


def test_admin_key_length_and_edge_settings_from_the_environment() -> None:
    with pytest.raises(SettingsError, match="at least 32 characters"):
        Settings.from_env({"TALLYHUB_ADMIN_KEY": "operator-chosen-admin-key-31"})
    assert Settings.from_env({"TALLYHUB_ADMIN_KEY": "k" * 32}).admin_key == "k" * 32
    defaults = Settings.from_env({})
    assert (defaults.admin_max_body_bytes, defaults.auth_failure_limit) == (1024 * 1024, 20)
    chosen = Settings.from_env({"TALLYHUB_ADMIN_MAX_BODY_BYTES": "4096", "TALLYHUB_AUTH_FAILURE_LIMIT": "0"})
    assert (chosen.admin_max_body_bytes, chosen.auth_failure_limit) == (4096, 0)
    with pytest.raises(SettingsError, match="TALLYHUB_AUTH_FAILURE_LIMIT"):
        Settings.from_env({"TALLYHUB_AUTH_FAILURE_LIMIT": "-1"})
