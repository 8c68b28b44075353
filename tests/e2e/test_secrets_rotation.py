"""Keys and secrets through the operator's real interfaces (``tallyhub`` CLI, ``serve``):
a master-key rotation done online and the old key retired with nothing lost; a start
without the right key refused loudly; a provider credential rotated with a grace
period; user keys rotated, revoked, expired and model-limited — seen within a second by two
``serve`` processes sharing PostgreSQL."""

import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import openai
import pytest

from adapters.crypto.aes_gcm import generate_master_key
from tests.conftest import PgSchemas
from tests.e2e.conftest import MODEL, UPSTREAM_KEY, configure
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import TALLYHUB, Gateway, cli

MESSAGES = [{"role": "user", "content": "hello"}]
NEW_UPSTREAM_KEY = "sk-upstream-rotated-secret-e2e-9b3f"


@pytest.fixture
def upstream() -> Iterator[FakeOpenAIUpstream]:
    fake = FakeOpenAIUpstream(api_key=UPSTREAM_KEY, also_accept=(NEW_UPSTREAM_KEY,)).start()
    yield fake
    fake.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, pg_schemas: PgSchemas) -> str | None:
    return pg_schemas.new_url() if request.param == "postgres" else None


def client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def chat(url: str, key: str, model: str = MODEL) -> None:
    client(url, key).chat.completions.create(model=model, messages=MESSAGES)


def serve_fails(env: dict[str, str]) -> str:
    """Run ``tallyhub serve`` expecting it to refuse to start; returns what it said."""
    done = subprocess.run([*TALLYHUB, "serve", "--port", "9"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def refused_within(url: str, key: str, seconds: float = 1.0) -> float:
    """How long until ``key`` is refused (401) at ``url``; fails if not within ``seconds`` (plus a
    request's own time): the read cache of a ``serve`` process may be up to a second old."""
    started = time.monotonic()
    while True:
        try:
            chat(url, key)
        except openai.AuthenticationError:
            return time.monotonic() - started
        assert time.monotonic() - started < seconds + 0.3, f"still accepted after {seconds} s"
        time.sleep(0.05)


def keys_seen(upstream: FakeOpenAIUpstream) -> list[str]:
    return [
        r.headers["authorization"].removeprefix("Bearer ") for r in upstream.requests if r.path.endswith("/completions")
    ]


def test_master_key_rotation_online_then_the_old_key_is_retired(
    tmp_path: Path, upstream: FakeOpenAIUpstream, database_url: str | None
) -> None:
    k1, k2 = f"k1:{generate_master_key()}", f"k2:{generate_master_key()}"
    gateway = Gateway.initialised(tmp_path, database_url, TALLYHUB_MASTER_KEYS=k1)
    assert not (tmp_path / "master.key").exists(), "no key file when the keys come from the environment"
    key = configure(gateway, upstream, "acme", "50")
    gateway.env["TALLYHUB_MASTER_KEYS"] = f"{k2},{k1}"  # step 1: the new key first, the old one still there
    gateway.start()
    try:
        chat(gateway.url, key)
        status = cli(gateway.env, "secrets", "status")
        assert status["newest_kid"] == "k2" and set(status["in_use"]) == {"k1"} and status["rotation_needed"]
        assert status["in_use"]["k1"]["count"] == 2  # the API-key pepper and the credential

        failures: list[BaseException] = []
        stop = threading.Event()

        def traffic() -> None:
            while not stop.is_set():
                try:
                    chat(gateway.url, key)
                except BaseException as error:  # noqa: BLE001 - reported below
                    failures.append(error)

        worker = threading.Thread(target=traffic)
        worker.start()
        try:
            time.sleep(0.3)
            rotated = cli(gateway.env, "secrets", "rotate-master")  # step 2: online
            time.sleep(0.3)
        finally:
            stop.set()
            worker.join()
        assert failures == []
        assert rotated["newest_kid"] == "k2" and len(rotated["rewrapped"]) == 2
        assert rotated["status"]["retirable_kids"] == ["k1"]
        assert cli(gateway.env, "secrets", "rotate-master")["rewrapped"] == []  # idempotent
        status = cli(gateway.env, "secrets", "status")
        assert set(status["in_use"]) == {"k2"} and status["retirable_kids"] == ["k1"]
        gateway.stop()

        gateway.env["TALLYHUB_MASTER_KEYS"] = k2  # step 3: retire k1
        gateway.start()
        chat(gateway.url, key)
        assert gateway.admin_json("GET", "/secrets")["configured_kids"] == ["k2"]
        assert cli(gateway.env, "balance", "acme")["balance"] < 50 * 10**9
    finally:
        gateway.stop()


def test_a_start_without_the_right_master_key_fails_loudly(tmp_path: Path, upstream: FakeOpenAIUpstream) -> None:
    k1 = f"k1:{generate_master_key()}"
    gateway = Gateway.initialised(tmp_path, None, TALLYHUB_MASTER_KEYS=k1)
    configure(gateway, upstream, "acme", "5")
    env = dict(gateway.env)

    env["TALLYHUB_MASTER_KEYS"] = f"k2:{generate_master_key()}"  # k1 forgotten
    said = serve_fails(env)
    assert "'k1', which is not configured" in said

    env["TALLYHUB_MASTER_KEYS"] = f"k1:{generate_master_key()}"  # the wrong key under the right name
    assert "could not be unwrapped with master key 'k1'" in serve_fails(env)

    for malformed, complaint in (
        (k1[:-4], "entry 1: master key must be 32 bytes, got 29"),
        ("k1:***", "entry 1: master key is not valid base64"),
        (f"{k1},{k1}", "appears twice"),
    ):
        env["TALLYHUB_MASTER_KEYS"] = malformed
        said = serve_fails(env)
        assert "TALLYHUB_MASTER_KEYS" in said and complaint in said, said
        assert k1.partition(":")[2][:20] not in said

    del env["TALLYHUB_MASTER_KEYS"]  # no key at all: the data dir has no key file either
    assert "no master key" in serve_fails(env)
    error = cli(env, "providers", "list", check=False)["error"]
    assert "no master key" in error["message"]


def test_a_provider_credential_rotated_with_a_grace_period(tmp_path: Path, upstream: FakeOpenAIUpstream) -> None:
    gateway = Gateway.initialised(tmp_path)
    key = configure(gateway, upstream, "acme", "50")
    gateway.start()
    try:
        rotated = cli(
            gateway.env,
            "providers",
            "rotate-credential",
            "openai",
            "--api-key-stdin",
            "--grace-seconds",
            "5",
            stdin=NEW_UPSTREAM_KEY + "\n",
        )
        old_id, new_id = rotated["rotated"]["old_credential_id"], rotated["rotated"]["new_credential_id"]
        retires_at = datetime.fromisoformat(rotated["rotated"]["old_retires_at"])
        assert [c["hint"] for c in rotated["credentials"]] == ["…" + UPSTREAM_KEY[-4:], "…" + NEW_UPSTREAM_KEY[-4:]]
        assert UPSTREAM_KEY not in str(rotated) and NEW_UPSTREAM_KEY not in str(rotated)
        upstream.requests.clear()
        while set(keys_seen(upstream)) != {UPSTREAM_KEY, NEW_UPSTREAM_KEY}:  # both serve during the grace period
            assert datetime.now(UTC) < retires_at - timedelta(seconds=1), keys_seen(upstream)
            chat(gateway.url, key)
        time.sleep((retires_at - datetime.now(UTC)).total_seconds() + 0.1)
        upstream.requests.clear()
        for _ in range(8):
            chat(gateway.url, key)
        assert set(keys_seen(upstream)) == {NEW_UPSTREAM_KEY}, "only the new one once it is over"
        deleted = cli(gateway.env, "providers", "delete-credential", "openai", old_id)
        assert [c["id"] for c in deleted["credentials"]] == [new_id]
        refused = cli(gateway.env, "providers", "delete-credential", "openai", new_id, check=False)
        assert "last credential" in refused["error"]["message"]
        chat(gateway.url, key)
    finally:
        gateway.stop()


def test_key_changes_reach_every_serve_process_within_a_second(
    tmp_path: Path, upstream: FakeOpenAIUpstream, pg_schemas: PgSchemas
) -> None:
    gateway = Gateway.initialised(tmp_path, pg_schemas.new_url())
    key = configure(gateway, upstream, "acme", "50")
    env = gateway.env
    gateway.start()
    gateway.start()
    urls = [gateway.url_of(0), gateway.url_of(1)]
    try:
        to_revoke = cli(env, "keys", "issue", "acme", "--name", "to-revoke")
        to_rotate = cli(env, "keys", "issue", "acme", "--name", "to-rotate")
        graceful = cli(env, "keys", "issue", "acme", "--name", "graceful")
        expires_at = datetime.now(UTC) + timedelta(seconds=8)
        expiring = cli(env, "keys", "issue", "acme", "--expires", expires_at.isoformat())["key"]
        for url in urls:  # every key works everywhere, and each process has its aggregates cached
            for k in (key, expiring, to_revoke["key"], to_rotate["key"], graceful["key"]):
                chat(url, k)
        cli(env, "keys", "revoke", to_revoke["id"])
        rotated = cli(env, "keys", "rotate", to_rotate["id"])
        slow = cli(env, "keys", "rotate", graceful["id"], "--grace-seconds", "4")
        assert rotated["replaces"]["revoked"] and not slow["replaces"]["revoked"]
        for url in urls:
            for gone in (to_revoke["key"], to_rotate["key"]):
                refused_within(url, gone)
            chat(url, rotated["key"])
            chat(url, slow["key"])
            chat(url, graceful["key"])  # still in its grace period
        retires_at = datetime.fromisoformat(slow["replaces"]["retires_at"])
        time.sleep(max(0.0, (max(expires_at, retires_at) - datetime.now(UTC)).total_seconds()) + 0.2)
        for url in urls:
            for gone in (expiring, graceful["key"]):
                refused_within(url, gone, seconds=0.0)  # expiry is checked on every request
            chat(url, key)
    finally:
        gateway.stop()


def test_a_key_limited_to_some_models_gets_403_for_the_others(tmp_path: Path, upstream: FakeOpenAIUpstream) -> None:
    gateway = Gateway.initialised(tmp_path)
    configure(gateway, upstream, "acme", "50")
    cli(gateway.env, "prices", "set", "openai/gpt-4o", "--input", "5", "--output", "15")
    limited = cli(gateway.env, "keys", "issue", "acme", "--models", MODEL)
    assert limited["allowed_models"] == [MODEL]
    gateway.start()
    try:
        chat(gateway.url, limited["key"], MODEL)
        before = gateway.balance("acme")
        with pytest.raises(openai.PermissionDeniedError):
            chat(gateway.url, limited["key"], "openai/gpt-4o")
        assert gateway.balance("acme")["balance"] == before["balance"]
        listed = [m.id for m in client(gateway.url, limited["key"]).models.list()]
        assert listed == [MODEL]
        cli(gateway.env, "keys", "set-models", limited["id"], "--all")
        deadline = time.monotonic() + 1.3  # the serve process may read the key up to a second late
        while True:
            try:
                chat(gateway.url, limited["key"], "openai/gpt-4o")
                break
            except openai.PermissionDeniedError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert (
            httpx.get(
                gateway.url + "/admin/v1/keys/" + limited["id"], headers={"authorization": f"Bearer {limited['key']}"}
            ).status_code
            == 401
        )
    finally:
        gateway.stop()
