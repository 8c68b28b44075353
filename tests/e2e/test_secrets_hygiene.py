"""Secret hygiene, end to end: known secrets are planted (provider keys, user keys, the
admin key, the master keys, and a marker inside a prompt), a full scenario runs on
PostgreSQL — good calls, streams, every kind of error, rotations of a credential, a
user key and the master key — and then the data dir, every table of the fresh schema,
the server's log output, every CLI output and every HTTP response are searched for
them, plain and base64- or hex-encoded: nothing is found, and no table but the secret
store holds an envelope. The only exceptions are the outputs that show a new key once,
and each of those shows only its own key."""

import base64
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import psycopg
import pytest

from adapters.crypto.aes_gcm import generate_master_key
from adapters.crypto.key_ring import decode_master_key
from tests.conftest import PG_CONNINFO, PgSchemas
from tests.e2e.conftest import MODEL
from tests.fakes.openai_scripts import Scripted
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import Gateway, cli

PROVIDER_KEY = "sk-plant-provider-" + secrets.token_hex(12)
PROVIDER_KEY_2 = "sk-plant-rotated-" + secrets.token_hex(12)
PROMPT_MARKER = "prompt-marker-" + secrets.token_hex(12)
K1, K2 = generate_master_key(), generate_master_key()


class Recorder(httpx.BaseTransport):
    """An httpx transport that keeps every response (headers and whole body)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.seen: list[bytes] = []
        self.shown_once: list[bytes] = []
        self.next_shows_a_key = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        body = response.read()
        record = b"\n".join(f"{k}: {v}".encode() for k, v in response.headers.items()) + b"\n" + body
        (self.shown_once if self.next_shows_a_key else self.seen).append(record)
        self.next_shows_a_key = False
        return httpx.Response(response.status_code, headers=response.headers, content=body, request=request)


class Operator:
    """The CLI, keeping every output: those that show a new key once are kept apart."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.outputs: list[str] = []
        self.shown_once: list[str] = []

    def run(self, *args: str, stdin: str | None = None, shows_a_key: bool = False, check: bool = True) -> dict:
        result = cli(self.gateway.env, *args, stdin=stdin, check=check)
        (self.shown_once if shows_a_key else self.outputs).append(str(result))
        return result


WINDOW = 10


def fragments(secret: bytes, *, shown_head: int = 0, shown_tail: int = 0) -> set[bytes]:
    """Every WINDOW-long piece of the part of ``secret`` that may never be shown."""
    hidden = secret[shown_head : len(secret) - shown_tail]
    return {hidden[i : i + WINDOW] for i in range(len(hidden) - WINDOW + 1)}


def encodings(secret: bytes) -> set[bytes]:
    """The secret, its hex, and its base64 at every alignment (edge characters dropped)."""
    forms = {secret, secret.hex().encode()}
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + secret)
        forms.add(encoded[4 if shift else 0 : -4])
        forms.add(base64.urlsafe_b64encode(b"\0" * shift + secret)[4 if shift else 0 : -4])
    return {form for form in forms if len(form) >= 16}


def planted_forms(planted: dict[str, tuple[bytes, int, int]]) -> dict[bytes, str]:
    """What to search for: each secret encoded, and each piece of what must stay hidden.
    ``planted`` maps a name to (secret, characters that may be shown at the head, at the tail)."""
    forms: dict[bytes, str] = {}
    for name, (secret, head, tail) in planted.items():
        for form in encodings(secret) | fragments(secret, shown_head=head, shown_tail=tail):
            forms[form] = name
    return forms


def schema_contents(schema: str) -> Iterator[tuple[str, bytes]]:
    with psycopg.connect(PG_CONNINFO) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
            )
        ]
        assert len(tables) >= 4, tables
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{schema}"."{table}"'):
                yield table, b"\x1f".join(v if isinstance(v, bytes) else str(v).encode() for v in row)


def find(forms: dict[bytes, str], where: str, content: bytes) -> list[str]:
    return [f"{forms[form]} in {where}" for form in forms if form in content]


@pytest.fixture
def upstream() -> Iterator[FakeOpenAIUpstream]:
    fake = FakeOpenAIUpstream(api_key=PROVIDER_KEY, also_accept=(PROVIDER_KEY_2,)).start()
    yield fake
    fake.stop()


def test_no_planted_secret_is_found_anywhere(
    tmp_path: Path, upstream: FakeOpenAIUpstream, pg_schemas: PgSchemas
) -> None:
    database_url = pg_schemas.new_url()
    schema = database_url.rpartition("schema=")[2]
    recorder = Recorder()
    http = httpx.Client(transport=recorder, timeout=30)
    gateway = Gateway.initialised(
        tmp_path,
        database_url,
        TALLYHUB_MASTER_KEYS=f"k1:{K1}",
        TALLYHUB_MAX_BODY_BYTES="4000",
        TALLYHUB_LOG_LEVEL="debug",
    )
    op = Operator(gateway)
    op.shown_once.append(gateway.admin_key)

    def call(method: str, path: str, key: str, shows_a_key: bool = False, **kwargs: Any) -> httpx.Response:
        recorder.next_shows_a_key = shows_a_key
        return http.request(method, gateway.url + path, headers={"authorization": f"Bearer {key}"}, **kwargs)

    def sdk(key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, http_client=http)

    # --- setting up, through the CLI --------------------------------------------------
    op.run(
        "providers",
        "add",
        "openai",
        "--kind",
        "openai",
        "--base-url",
        upstream.base_url,
        "--api-key-stdin",
        stdin=PROVIDER_KEY + "\n",
    )
    op.run("prices", "set", MODEL, "--input", "2", "--output", "8")
    for account in ("acme", "globex"):
        op.run("accounts", "create", account)
        op.run("credits", "grant", account, "20", "--reason", "hygiene")
    user = op.run("keys", "issue", "acme", "--name", "app", shows_a_key=True)
    other = op.run("keys", "issue", "globex", "--models", MODEL, shows_a_key=True)
    op.run("providers", "list")
    op.run("secrets", "status")
    gateway.start()
    try:
        # --- traffic, good and bad ----------------------------------------------------
        messages = [{"role": "user", "content": f"remember {PROMPT_MARKER}"}]
        sdk(user["key"]).chat.completions.create(model=MODEL, messages=messages)
        list(
            sdk(user["key"]).chat.completions.create(
                model=MODEL, messages=messages, stream=True, stream_options={"include_usage": True}
            )
        )
        sdk(other["key"]).chat.completions.create(model=MODEL, messages=messages)
        for bad_key in (user["key"] + "x", gateway.admin_key, user["key"][:-4], ""):
            with pytest.raises(openai.APIStatusError):
                sdk(bad_key or "none").chat.completions.create(model=MODEL, messages=messages)
        with pytest.raises(openai.PermissionDeniedError):
            sdk(other["key"]).chat.completions.create(model="openai/gpt-4o", messages=messages)
        with pytest.raises(openai.NotFoundError):
            sdk(user["key"]).chat.completions.create(model="nowhere/model", messages=messages)
        upstream.script(Scripted.error(400, f"invalid request for key {PROVIDER_KEY}"))
        with pytest.raises(openai.BadRequestError):
            sdk(user["key"]).chat.completions.create(model=MODEL, messages=messages)
        assert call("POST", "/v1/chat/completions", user["key"], content=b"{not json").status_code == 400
        big = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT_MARKER * 400}]}
        assert call("POST", "/v1/chat/completions", user["key"], json=big).status_code == 413
        for path in ("/v1/me", "/v1/me/usage", "/v1/me/requests", "/v1/models"):
            assert call("GET", path, user["key"]).status_code == 200
        assert call("GET", "/admin/v1/providers", user["key"]).status_code == 401
        for path in (
            "/providers",
            "/accounts",
            "/requests",
            "/usage",
            "/secrets",
            f"/keys/{user['id']}",
            "/projections",
            "/prices",
        ):
            assert call("GET", "/admin/v1" + path, gateway.admin_key).status_code == 200, path

        # --- rotations: a credential (over HTTP), a user key, the master key ---------
        rotated_credential = call(
            "POST", "/admin/v1/providers/openai/credentials/rotate", gateway.admin_key, json={"api_key": PROVIDER_KEY_2}
        )
        assert rotated_credential.status_code == 200, rotated_credential.text
        rotated_key = call(
            "POST", f"/admin/v1/keys/{user['id']}/rotate", gateway.admin_key, shows_a_key=True, json={}
        ).json()
        sdk(rotated_key["key"]).chat.completions.create(model=MODEL, messages=messages)
        gateway.stop()
        gateway.env["TALLYHUB_MASTER_KEYS"] = f"k2:{K2},k1:{K1}"
        gateway.start()
        op.run("secrets", "rotate-master")
        op.run("secrets", "status")
        gateway.stop()
        gateway.env["TALLYHUB_MASTER_KEYS"] = f"k2:{K2}"
        gateway.start()
        sdk(rotated_key["key"]).chat.completions.create(model=MODEL, messages=messages)
        op.run("keys", "revoke", other["id"])
        op.run("balance", "acme")
        op.run("accounts", "list")
        op.run("projections", "status")
        assert call("GET", f"/admin/v1/keys/{user['id']}", gateway.admin_key).status_code == 200

        # --- last: the provider refuses the credential, echoing it ------------------
        upstream.script(Scripted.error(401, f"Incorrect API key provided: {PROVIDER_KEY_2}"))
        with pytest.raises(openai.APIStatusError):
            sdk(rotated_key["key"]).chat.completions.create(model=MODEL, messages=messages)
        op.run("providers", "list")
        assert "error" in op.run("keys", "rotate", user["id"], check=False)  # already rotated: an error
    finally:
        gateway.stop()
        http.close()

    planted = {
        "provider key": (PROVIDER_KEY.encode(), 0, 4),
        "rotated provider key": (PROVIDER_KEY_2.encode(), 0, 4),
        "user key": (user["key"].encode(), 4, 4),
        "globex key": (other["key"].encode(), 4, 4),
        "rotated user key": (rotated_key["key"].encode(), 4, 4),
        "admin key": (gateway.admin_key.encode(), 4, 0),
        "master key k1": (K1.encode(), 0, 0),
        "master key k1 (bytes)": (decode_master_key(K1), 0, 0),
        "master key k2": (K2.encode(), 0, 0),
        "master key k2 (bytes)": (decode_master_key(K2), 0, 0),
        "prompt": (PROMPT_MARKER.encode(), 0, 0),
    }
    forms = planted_forms(planted)
    found: list[str] = []
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.name.startswith("serve-") for path in files)
    assert sum(path.stat().st_size for path in files if path.name.startswith("serve-")) > 0
    for path in files:
        found += find(forms, f"file {path.name}", path.read_bytes())
    rows = 0
    secret_rows = 0
    for table, row in schema_contents(schema):
        rows += 1
        found += find(forms, f"table {table}", row)
        if table == "ledger_secrets":
            secret_rows += 1
        elif b"wrapped_key" in row or b"ciphertext" in row:  # envelopes live only in the secret store
            found.append(f"an envelope in table {table}")
    assert rows > 50
    assert secret_rows == 2  # the pepper and the current credential (the rotated one's was deleted)
    for number, output in enumerate(op.outputs):
        found += find(forms, f"CLI output {number}", output.encode())
    assert len(recorder.seen) >= 25
    for number, response in enumerate(recorder.seen):
        found += find(forms, f"HTTP response {number}", response)
    assert found == []

    # Each output that shows a new key shows that key and no other secret.
    once = [*op.shown_once, *(r.decode() for r in recorder.shown_once)]
    assert len(once) == 4  # the admin key (init), two issued keys, one rotated key
    for shown in once:
        own = {name for name, (secret, _, _) in planted.items() if secret.decode(errors="replace") in shown}
        assert len(own) == 1, own
        others = {form: name for form, name in forms.items() if name not in own}
        assert find(others, "an output showing a key once", shown.encode()) == []
