"""The operator interfaces: every CLI command answers ``--json`` with one document
(errors included, exit code 1), secrets come only from stdin, and the admin API does
the same operations behind the admin key."""

import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import TALLYHUB, Gateway, cli


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    gateway = Gateway.initialised(tmp_path_factory.mktemp("cli"))
    yield gateway.start()
    gateway.stop()


def fails(env: dict[str, str], *args: str, stdin: str | None = None) -> dict:
    result = cli(env, *args, stdin=stdin, check=False)
    assert set(result) == {"error"} and result["error"]["message"], result
    return result["error"]


def test_init_is_idempotent_and_shows_the_admin_key_only_once(gateway: Gateway) -> None:
    again = cli(gateway.env, "init")
    assert again["admin_key"] is None and again["initialised"] is True
    key_file = Path(gateway.env["TALLYHUB_DATA_DIR"]) / "master.key"
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_provider_commands_take_the_secret_from_stdin_and_never_print_it(gateway: Gateway) -> None:
    added = cli(
        gateway.env,
        "providers",
        "add",
        "deepseek",
        "--kind",
        "openai-compatible",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--api-key-stdin",
        stdin="sk-deepseek-secret-9876\n",
    )
    assert added["credentials"][0]["hint"] == "…9876"
    listed = subprocess.run([*TALLYHUB, "providers", "list", "--json"], env=gateway.env, capture_output=True, text=True)
    assert "deepseek" in listed.stdout and "sk-deepseek-secret" not in listed.stdout


def test_provider_input_errors_are_clear(gateway: Gateway) -> None:
    assert "unknown provider kind" in fails(gateway.env, "providers", "add", "x", "--kind", "nope")["message"]
    assert "--base-url" in fails(gateway.env, "providers", "add", "x", "--kind", "openai-compatible")["message"]
    assert (
        "stdin"
        in fails(gateway.env, "providers", "add", "x", "--kind", "openai", "--api-key-stdin", stdin="\n")["message"]
    )
    assert "needs an API key" in fails(gateway.env, "providers", "add", "x", "--kind", "openai")["message"]


def test_money_input_is_exact_or_refused(gateway: Gateway) -> None:
    cli(gateway.env, "accounts", "create", "initech", "--starter-credits", "1.5")
    assert cli(gateway.env, "balance", "initech")["balance"] == 1_500_000_000
    assert "nanocredit" in fails(gateway.env, "credits", "grant", "initech", "0.0000000001")["message"]
    assert "negative" in fails(gateway.env, "credits", "grant", "initech", "-5")["message"]
    assert (
        fails(gateway.env, "prices", "set", "openai/x", "--input", "abc", "--output", "1")["code"] == "invalid_request"
    )
    assert fails(gateway.env, "accounts", "create", "initech")["code"] == "already_exists"
    assert fails(gateway.env, "balance", "nobody")["code"] == "account_not_found"


def test_grants_with_an_idempotency_key_are_credited_once_through_the_cli(gateway: Gateway) -> None:
    cli(gateway.env, "accounts", "create", "hooli")
    first = cli(gateway.env, "credits", "grant", "hooli", "2", "--idempotency-key", "pay_42")
    second = cli(gateway.env, "credits", "grant", "hooli", "2", "--idempotency-key", "pay_42")
    assert (first["credited"], second["credited"]) == (True, False)
    assert cli(gateway.env, "balance", "hooli")["balance"] == 2_000_000_000


def test_keys_are_shown_once_and_revocation_takes_effect(gateway: Gateway) -> None:
    cli(gateway.env, "accounts", "create", "umbrella")
    issued = cli(gateway.env, "keys", "issue", "umbrella", "--name", "ci")
    assert issued["key"].startswith("thk_") and issued["prefix"] == "thk_…" + issued["key"][-4:]
    headers = {"authorization": f"Bearer {issued['key']}"}
    assert httpx.get(gateway.url + "/v1/models", headers=headers).status_code == 200
    cli(gateway.env, "keys", "revoke", issued["id"])
    assert httpx.get(gateway.url + "/v1/models", headers=headers).status_code == 401


def test_the_admin_api_does_the_same_operations_behind_the_admin_key(gateway: Gateway) -> None:
    assert gateway.admin_json("POST", "/accounts", json={"name": "wayne", "starter_credits": "2"})["name"] == "wayne"
    grant = gateway.admin_json("POST", "/accounts/wayne/grants", json={"amount": "0.5", "idempotency_key": "g1"})
    assert grant["credited"] is True
    assert gateway.balance("wayne")["balance_credits"] == "2.500000000"
    price = gateway.admin_json(
        "POST", "/prices", json={"model": "deepseek/deepseek-chat", "input": "0.27", "output": "1.1"}
    )
    assert price["version"] >= 1
    assert gateway.admin_json("GET", "/prices")["models"]["deepseek/deepseek-chat"]["input"] == "0.270000000"
    key = gateway.admin_json("POST", "/accounts/wayne/keys", json={"name": "app"})
    assert key["key"].startswith("thk_")
    assert any(row["name"] == "wayne" for row in gateway.admin_json("GET", "/accounts")["data"])
    assert gateway.admin_json("GET", "/projections")["data"]


def test_the_admin_api_refuses_floats_for_money_and_unknown_fields(gateway: Gateway) -> None:
    assert gateway.admin("POST", "/accounts/wayne/grants", json={"amount": 0.1}).status_code == 400
    assert gateway.admin("POST", "/accounts", json={"name": "x", "bogus": 1}).status_code == 400


def test_the_admin_api_needs_the_admin_key(gateway: Gateway) -> None:
    response = httpx.get(gateway.url + "/admin/v1/accounts", headers={"authorization": "Bearer tha_wrong"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
