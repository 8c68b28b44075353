"""Changing a credential's weight from the operator's interfaces, against a real gateway:
``tallyhub providers weight NAME CREDENTIAL_ID WEIGHT`` and ``PATCH
/admin/v1/providers/{name}/credentials/{id}`` answer what ``providers show`` answers,
refuse a bad weight, credential or provider with the interface's own error, and the audit
log names who made each change (``cli``, the admin key's actor) with both weights."""

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from application.acting import CLI, admin_actor
from tests.support.gateway import REPO, TALLYHUB, Gateway, cli

SECRET = "sk-weight-test-secret-4a4a"
OTHER = "sk-weight-test-secret-5b5b"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = Gateway.initialised(tmp_path_factory.mktemp("weight"))
    yield gateway.start()
    gateway.stop()


@pytest.fixture(scope="module")
def credentials(gateway: Gateway) -> tuple[str, str]:
    """Provider ``weighted`` with two credentials of weight 1."""
    cli(gateway.env, "providers", "add", "weighted", "--kind", "openai", "--api-key-stdin", stdin=SECRET + "\n")
    added = cli(gateway.env, "providers", "add-credential", "weighted", "--api-key-stdin", stdin=OTHER + "\n")
    first, second = (c["id"] for c in added["credentials"])
    return first, second


def weights(provider: dict[str, Any]) -> dict[str, int]:
    return {c["id"]: c["weight"] for c in provider["credentials"]}


def fails(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run([*TALLYHUB, *args, "--json"], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    return done.returncode, json.loads(done.stdout)["error"]


def audit_rows(gateway: Gateway) -> list[dict[str, Any]]:
    rows = gateway.admin_json("GET", "/audit", params={"action": "provider.credential_weight_changed"})["data"]
    return list(reversed(rows))  # oldest first


def test_the_cli_changes_a_weight_and_answers_what_providers_show_answers(
    gateway: Gateway, credentials: tuple[str, str]
) -> None:
    first, second = credentials
    changed = cli(gateway.env, "providers", "weight", "weighted", second, "250")
    assert weights(changed) == {first: 1, second: 250}
    assert changed == cli(gateway.env, "providers", "show", "weighted")
    text = subprocess.run(
        [*TALLYHUB, "providers", "weight", "weighted", second, "250"],
        capture_output=True,
        text=True,
        env=gateway.env,
        cwd=REPO,
        timeout=60,
    )
    assert text.returncode == 0 and f"credential {second} of weighted: weight 250" in text.stdout
    assert f"{second} …5b5b (weight 250)" in text.stdout and OTHER not in text.stdout


def test_the_cli_refuses_a_bad_weight_credential_or_provider_and_changes_nothing(
    gateway: Gateway, credentials: tuple[str, str]
) -> None:
    first, _ = credentials
    before = cli(gateway.env, "providers", "show", "weighted")
    status, error = fails(gateway.env, "providers", "weight", "weighted", first, "0")
    assert (status, error["code"], error["message"]) == (1, "invalid_request", "a credential weight must be positive")
    status, error = fails(gateway.env, "providers", "weight", "weighted", first, "1000001")
    assert (status, error["message"]) == (1, "a credential weight must be at most 1,000,000")
    status, error = fails(gateway.env, "providers", "weight", "weighted", "nope", "3")
    assert (status, error["message"]) == (1, "provider 'weighted' has no credential 'nope'")
    status, error = fails(gateway.env, "providers", "weight", "nobody", first, "3")
    assert (status, error["code"]) == (1, "provider_not_found")
    status, error = fails(gateway.env, "providers", "weight", "weighted", first, "2.5")
    assert (status, error["code"]) == (2, "invalid_arguments") and "invalid int value: '2.5'" in error["message"]
    assert cli(gateway.env, "providers", "show", "weighted") == before


def test_the_admin_api_patches_a_weight_and_answers_the_provider(
    gateway: Gateway, credentials: tuple[str, str]
) -> None:
    first, second = credentials
    changed = gateway.admin_json("PATCH", f"/providers/weighted/credentials/{first}", json={"weight": 1_000_000})
    assert weights(changed)[first] == 1_000_000
    assert changed == gateway.admin_json("GET", "/providers/weighted")
    assert changed == cli(gateway.env, "providers", "show", "weighted")


@pytest.mark.parametrize(
    "body",
    [
        {"weight": 0},
        {"weight": 1_000_001},
        {"weight": "5"},
        {"weight": 2.5},
        {"weight": True},
        {},
        {"weight": 5, "x": 1},
    ],
)
def test_the_admin_api_refuses_a_bad_body_with_400_in_the_error_shape(
    gateway: Gateway, credentials: tuple[str, str], body: dict[str, Any]
) -> None:
    first, _ = credentials
    before = gateway.admin_json("GET", "/providers/weighted")
    response = gateway.admin("PATCH", f"/providers/weighted/credentials/{first}", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert gateway.admin_json("GET", "/providers/weighted") == before


def test_the_admin_api_refuses_an_unknown_credential_or_provider_and_needs_the_admin_key(
    gateway: Gateway, credentials: tuple[str, str]
) -> None:
    first, _ = credentials
    response = gateway.admin("PATCH", "/providers/weighted/credentials/nope", json={"weight": 3})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "provider 'weighted' has no credential 'nope'"
    response = gateway.admin("PATCH", f"/providers/nobody/credentials/{first}", json={"weight": 3})
    assert (response.status_code, response.json()["error"]["code"]) == (404, "provider_not_found")
    response = httpx.patch(
        f"{gateway.url}/admin/v1/providers/weighted/credentials/{first}",
        json={"weight": 3},
        headers={"authorization": "Bearer tha_wrong"},
        timeout=30,
    )
    assert (response.status_code, response.json()["error"]["code"]) == (401, "invalid_api_key")


def test_the_audit_log_names_who_changed_each_weight_with_both_weights(
    gateway: Gateway, credentials: tuple[str, str]
) -> None:
    _, second = credentials
    gateway.admin_json("PATCH", f"/providers/weighted/credentials/{second}", json={"weight": 7})
    cli(gateway.env, "providers", "weight", "weighted", second, "4")
    gateway.admin_json("PATCH", f"/providers/weighted/credentials/{second}", json={"weight": 9})
    gateway.admin_json("PATCH", f"/providers/weighted/credentials/{second}", json={"weight": 9})  # unchanged: no row
    rows = [(r["actor"], r["target"], r["summary"]) for r in audit_rows(gateway)]
    assert rows[-2:] == [
        (CLI, "weighted", f"credential {second} weight 7 → 4"),
        (admin_actor(gateway.admin_key), "weighted", f"credential {second} weight 4 → 9"),
    ]
