"""The same bounds and checks from the command line: an amount past the bound or malformed
is one JSON error naming it (exit 1) and nothing is granted; caps only on the account's own
keys; caps refused in track mode; a reused idempotency key with another amount refused."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.gateway import REPO, gateway_env

TALLYHUB = [sys.executable, "-m", "adapters.cli.main"]


def run(env: dict[str, str], *args: str) -> tuple[int, dict]:
    done = subprocess.run([*TALLYHUB, *args, "--json"], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert "Traceback" not in done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    env = gateway_env(tmp_path_factory.mktemp("cli") / "data", None)
    for args in (("init",), ("accounts", "create", "acme"), ("accounts", "create", "beta")):
        assert run(env, *args)[0] == 0
    return env


@pytest.mark.parametrize("amount", ["99999999999999999999999", "1e3", "١", "1_000", "9" * 5000])
def test_a_grant_past_the_bound_or_malformed_is_one_json_error_and_grants_nothing(
    env: dict[str, str], amount: str
) -> None:
    status, document = run(env, "credits", "grant", "beta", amount)
    assert status == 1 and document["error"]["code"] == "invalid_amount", document
    assert run(env, "balance", "beta")[1]["granted_total"] == 0


def test_starter_credits_past_the_bound_are_refused(env: dict[str, str]) -> None:
    status, document = run(env, "accounts", "create", "gamma", "--starter-credits", "10000000.000000001")
    assert status == 1 and document["error"]["code"] == "invalid_amount"
    assert "starter_credits" in document["error"]["message"]


def test_an_idempotency_key_reused_for_another_amount_is_refused(env: dict[str, str]) -> None:
    assert run(env, "credits", "grant", "acme", "1", "--idempotency-key", "cli-k1")[1]["credited"] is True
    assert run(env, "credits", "grant", "acme", "1", "--idempotency-key", "cli-k1")[1]["credited"] is False
    status, document = run(env, "credits", "grant", "acme", "2", "--idempotency-key", "cli-k1")
    assert status == 1 and document["error"]["code"] == "idempotency_conflict"


def test_caps_only_on_the_accounts_own_keys(env: dict[str, str]) -> None:
    acme_key = run(env, "keys", "issue", "acme")[1]["id"]
    status, document = run(env, "accounts", "caps", "beta", "--day", "1", "--key", acme_key)
    assert status == 1 and document["error"]["code"] == "api_key_not_found"
    status, capped = run(env, "accounts", "caps", "acme", "--day", "1", "--key", acme_key)
    assert status == 0 and capped["day"] == 10**9


def test_track_mode_refuses_caps_from_the_command_line(env: dict[str, str]) -> None:
    status, document = run({**env, "TALLYHUB_BILLING_MODE": "track"}, "accounts", "caps", "beta", "--month", "5")
    assert status == 1 and document["error"]["code"] == "not_in_credits_mode"
    assert run(env, "accounts", "caps", "beta", "--month", "5")[0] == 0  # credits mode: accepted


def test_a_price_past_the_maximum_rate_is_refused(env: dict[str, str]) -> None:
    status, document = run(env, "prices", "set", "openai/gpt-4o-mini", "--input", "100000.000000001", "--output", "1")
    assert status == 1 and document["error"]["code"] == "invalid_request" and "input" in document["error"]["message"]


def test_a_price_file_nested_too_deeply_is_one_json_error(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    status, document = run(env, "prices", "publish", str(path))
    assert status == 1 and document["error"]["code"] == "invalid_request", document
