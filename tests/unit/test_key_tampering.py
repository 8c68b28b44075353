"""A credential whose envelope was tampered with, truncated, or sealed under a key that
is not configured never reaches the provider: the caller gets a clear server error, the
fake upstream receives nothing, and the request's hold is released."""

import base64
from collections.abc import Iterator
from dataclasses import dataclass

import openai
import pytest
from fastapi.testclient import TestClient

from adapters.bootstrap import build_services
from adapters.crypto.aes_gcm import AesGcmKeyVault, generate_master_key
from adapters.crypto.key_digest import HmacApiKeyScheme
from adapters.crypto.key_ring import KeyRing
from adapters.settings import Settings
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from tests.fakes.clock import FakeClock
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.unit.test_key_http import auth, in_process_app

SECRET = "sk-tamper-provider-secret-7777"
MODEL = "openai/gpt-4o-mini"


@dataclass
class Setup:
    client: TestClient
    ledger: Ledger
    upstream: FakeOpenAIUpstream
    key: str


@pytest.fixture
def setup() -> Iterator[Setup]:
    upstream = FakeOpenAIUpstream(api_key=SECRET).start()
    ring = KeyRing.parse(f"k1:{generate_master_key()}", source="TEST")
    ledger = Ledger(
        {"PERSISTENCE_MODULE": "eventsourcing.popo"},
        vault=AesGcmKeyVault(ring),
        key_scheme_factory=HmacApiKeyScheme,
        clock=FakeClock(),
    )
    ledger.initialise()
    # wired before the provider exists: the start check would open (and keep) its secret before the test damages it
    app = in_process_app(build_services(Settings(), ledger=ledger))
    ProviderRegistry(ledger).register_provider(
        "openai", "openai", base_url=upstream.base_url, region=None, secret=SECRET
    )
    Prices(ledger).set_price(MODEL, price_from_credits(input="2", output="8"))
    Accounts(ledger).create_account("acme", starter_credits=10**10)
    key = ApiKeys(ledger).issue_api_key("acme").plaintext
    with TestClient(app) as client:
        yield Setup(client, ledger, upstream, key)
    ledger.close()
    upstream.stop()


def chat(setup: Setup) -> object:
    return setup.client.post(
        "/v1/chat/completions",
        headers=auth(setup.key),
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
    )


def envelope(ledger: Ledger) -> dict[str, str]:
    row = ledger.secret_store.get(ledger.get_provider("openai").credentials[0].secret_ref)
    assert row is not None
    return row.envelope


def replace_envelope(ledger: Ledger, change: dict[str, str]) -> None:
    """Change the credential's row in the secret store, as someone with write access could."""
    row = ledger.secret_store.get(ledger.get_provider("openai").credentials[0].secret_ref)
    assert row is not None
    assert ledger.secret_store.replace(row.ref, {**row.envelope, **change}, version=row.version)


def flipped(text: str, at: int) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[at] ^= 0x80
    return base64.b64encode(bytes(raw)).decode()


def test_an_intact_credential_is_used(setup: Setup) -> None:
    assert chat(setup).status_code == 200  # type: ignore[attr-defined]
    assert [r.headers["authorization"] for r in setup.upstream.requests] == [f"Bearer {SECRET}"]


@pytest.mark.parametrize("damage", ["gcm tag", "ciphertext body", "truncated", "wrapped key", "unknown kid"])
def test_a_damaged_credential_is_never_sent_upstream(setup: Setup, damage: str) -> None:
    sealed = envelope(setup.ledger)
    change = {
        "gcm tag": {"ciphertext": flipped(sealed["ciphertext"], -1)},
        "ciphertext body": {"ciphertext": flipped(sealed["ciphertext"], 0)},
        "truncated": {"ciphertext": base64.b64encode(base64.b64decode(sealed["ciphertext"])[:-3]).decode()},
        "wrapped key": {"wrapped_key": flipped(sealed["wrapped_key"], 2)},
        "unknown kid": {"kid": "k0"},
    }[damage]
    replace_envelope(setup.ledger, change)
    before = setup.ledger.get_account("acme").available
    response = chat(setup)
    assert response.status_code == 500  # type: ignore[attr-defined]
    error = response.json()["error"]  # type: ignore[attr-defined]
    assert error["code"] == "secret_error" and SECRET[:-4] not in error["message"]
    assert setup.upstream.requests == []
    assert setup.ledger.get_account("acme").available == before, "the hold is released"


def test_the_sdk_sees_a_server_error_not_garbage(setup: Setup) -> None:
    sealed = envelope(setup.ledger)
    replace_envelope(setup.ledger, {"ciphertext": flipped(sealed["ciphertext"], -1)})
    client = openai.OpenAI(base_url="http://testserver/v1", api_key=setup.key, max_retries=0, http_client=setup.client)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert "failed authentication" in str(caught.value)
    assert setup.upstream.requests == []
