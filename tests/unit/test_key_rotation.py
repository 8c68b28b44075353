"""Master-key rotation over a real (SQLite) event store, reopened the way a restarted
gateway reopens it: with the old ring, the rotated ring, then the new key alone."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from adapters.crypto.aes_gcm import AesGcmKeyVault, generate_master_key
from adapters.crypto.key_digest import HmacApiKeyScheme
from adapters.crypto.key_ring import KeyRing
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.key_management import check_key_ring, rotate_master, secrets_status
from application.ledger import Ledger
from application.providers import ProviderRegistry
from domain.errors import SecretError

OPENAI_SECRET = "sk-openai-rotation-secret-1111"
ANTHROPIC_SECRET = "sk-ant-rotation-secret-2222"
K1, K2 = f"k1:{generate_master_key()}", f"k2:{generate_master_key()}"


@contextmanager
def opened(path: Path, *entries: str) -> Iterator[Ledger]:
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(path / "store.sqlite"),
        "CREATE_TABLE": "y",
    }
    vault = AesGcmKeyVault(KeyRing.parse(",".join(entries), source="TEST"))
    ledger = Ledger(env, vault=vault, key_scheme_factory=HmacApiKeyScheme)
    try:
        yield ledger
    finally:
        ledger.close()


def secrets_of(ledger: Ledger) -> set[str]:
    return {ledger.open_credential(p, c) for p in ledger.list_providers() for c in p.credentials}


@pytest.fixture
def store(tmp_path: Path) -> dict[str, str]:
    """A store initialised under k1 with two providers (three credentials) and a user key."""
    with opened(tmp_path, K1) as ledger:
        ledger.initialise()
        ProviderRegistry(ledger).register_provider("openai", "openai", base_url=None, region=None, secret=OPENAI_SECRET)
        ProviderRegistry(ledger).add_credential("openai", OPENAI_SECRET + "-b")
        ProviderRegistry(ledger).register_provider(
            "anthropic", "anthropic", base_url=None, region=None, secret=ANTHROPIC_SECRET
        )
        Accounts(ledger).create_account("acme")
        return {"user_key": ApiKeys(ledger).issue_api_key("acme").plaintext, "path": str(tmp_path)}


def test_after_rotation_every_secret_opens_with_the_new_key_alone(store: dict[str, str], tmp_path: Path) -> None:
    with opened(tmp_path, K2, K1) as ledger:
        ledger.load_deployment()
        before = secrets_status(ledger)
        assert before.in_use.keys() == {"k1"} and before.rotation_needed and before.retirable_kids == []
        result = rotate_master(ledger)
        assert len(result.rewrapped) == 4  # the pepper and three credentials
        assert result.status is not None and result.status.in_use.keys() == {"k2"}
        assert result.status.retirable_kids == ["k1"]
    with opened(tmp_path, K2) as ledger:  # k1 retired
        ledger.load_deployment()
        check_key_ring(ledger)
        assert secrets_of(ledger) == {OPENAI_SECRET, OPENAI_SECRET + "-b", ANTHROPIC_SECRET}
        assert ledger.authenticate(store["user_key"]).account_id == ledger.get_account("acme").id


def test_rotation_replaces_rows_in_place_writes_no_event_and_a_second_run_changes_nothing(
    store: dict[str, str], tmp_path: Path
) -> None:
    with opened(tmp_path, K2, K1) as ledger:
        head = ledger.recorder.max_notification_id()
        before = {row.ref: row for row in ledger.secret_store.all()}
        rotate_master(ledger)
        after = {row.ref: row for row in ledger.secret_store.all()}
        assert after.keys() == before.keys() and len(after) == 4
        for ref, row in after.items():
            assert row.kid == "k2" and row.version == before[ref].version + 1
            assert row.envelope["ciphertext"] != before[ref].envelope["ciphertext"], "a fresh data key, not a re-wrap"
        assert ledger.recorder.max_notification_id() == head  # nothing about it goes into the history
        again = rotate_master(ledger)
        assert again.rewrapped == [] and {row.ref: row for row in ledger.secret_store.all()} == after


def test_without_the_old_key_before_rotation_the_start_fails_loudly(store: dict[str, str], tmp_path: Path) -> None:
    with opened(tmp_path, K2) as ledger:
        with pytest.raises(SecretError, match="'k1', which is not configured"):
            ledger.load_deployment()
        with pytest.raises(SecretError) as caught:
            check_key_ring(ledger)
        assert "API-key pepper" in str(caught.value) and "credential" in str(caught.value)


def test_a_wrong_key_under_the_old_kid_fails_loudly(store: dict[str, str], tmp_path: Path) -> None:
    with opened(tmp_path, f"k1:{generate_master_key()}") as ledger:
        with pytest.raises(SecretError, match="could not be unwrapped with master key 'k1'"):
            ledger.load_deployment()


def test_every_secret_a_forgotten_key_sealed_is_named_at_start(store: dict[str, str], tmp_path: Path) -> None:
    """Rotated to k3, then started without it: the check names the pepper and each credential."""
    k3 = f"k3:{generate_master_key()}"
    with opened(tmp_path, k3, K1) as ledger:
        rotate_master(ledger)
        ProviderRegistry(ledger).register_provider(
            "late", "openai", base_url=None, region=None, secret="sk-late-secret-3333"
        )
    with opened(tmp_path, K2, K1) as ledger:  # the operator forgot k3
        with pytest.raises(SecretError) as caught:
            check_key_ring(ledger)
        assert str(caught.value).count("'k3'") == 5  # the pepper and four credentials
        assert "sk-late" not in str(caught.value)


def test_new_secrets_are_sealed_under_the_newest_key(store: dict[str, str], tmp_path: Path) -> None:
    with opened(tmp_path, K2, K1) as ledger:
        ProviderRegistry(ledger).add_credential("anthropic", ANTHROPIC_SECRET + "-new")
        status = secrets_status(ledger)
        assert status.in_use["k2"] == [
            f"credential {ledger.get_provider('anthropic').credentials[-1].credential_id} of anthropic"
        ]
        assert "k1" in status.in_use


def test_a_tampered_envelope_is_reported_not_reencrypted(store: dict[str, str], tmp_path: Path) -> None:
    with opened(tmp_path, K2, K1) as ledger:
        ref = ledger.get_provider("anthropic").credentials[0].secret_ref
        row = ledger.secret_store.get(ref)
        assert row is not None
        sealed = {**row.envelope, "ciphertext": row.envelope["ciphertext"][:-8] + "AAAAAAA="}
        assert ledger.secret_store.replace(ref, sealed, version=row.version)
        with pytest.raises(SecretError, match="failed authentication"):
            rotate_master(ledger)
        assert ledger.secret_store.get(ref).envelope == sealed  # type: ignore[union-attr]
