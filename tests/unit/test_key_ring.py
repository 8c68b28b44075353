"""The master key ring and the envelope vault: which key seals, which opens, and every
way a bad key or a damaged envelope fails loudly instead of yielding bytes."""

import base64
import os
from pathlib import Path

import pytest

from adapters.crypto.aes_gcm import AesGcmKeyVault, generate_master_key, key_id_for
from adapters.crypto.key_ring import KeyRing, decode_master_key
from adapters.crypto.master_key import ensure_master_key_file, load_key_ring
from adapters.settings import Settings
from domain.errors import NotInitialised, SecretError

CONTEXT = b"tallyhub:credential:openai:abc"
SECRET = b"sk-live-the-provider-secret-0042"


def key_text() -> str:
    return generate_master_key()


def ring(*entries: str) -> KeyRing:
    return KeyRing.parse(",".join(entries), source="TEST")


def flip(text: str, at: int = -3) -> str:
    """The base64 text with one byte of the decoded data changed."""
    raw = bytearray(base64.b64decode(text))
    raw[at] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


# --- parsing ------------------------------------------------------------------------


def test_the_first_entry_is_the_newest_and_seals() -> None:
    keys = ring(f"k2:{key_text()}", f"k1:{key_text()}")
    vault = AesGcmKeyVault(keys)
    assert keys.kids == ["k2", "k1"] and vault.kid == "k2"
    assert vault.seal(SECRET, context=CONTEXT)["kid"] == "k2"


def test_a_key_file_holds_one_entry_per_line_with_comments() -> None:
    text = f"# rotated 2026-11\nnew:{key_text()}\n\n  old:{key_text()}  # retire after rotate-master\n"
    assert KeyRing.parse(text, source="file").kids == ["new", "old"]


def test_a_bare_key_is_named_by_its_fingerprint() -> None:
    text = key_text()
    assert ring(text).kids == [key_id_for(decode_master_key(text))]


@pytest.mark.parametrize(
    "entry, complaint",
    [
        ("k1:not base64!", "not valid base64"),
        ("k1:" + base64.urlsafe_b64encode(os.urandom(31)).decode(), "must be 32 bytes, got 31"),
        ("k1:" + base64.urlsafe_b64encode(os.urandom(33)).decode(), "must be 32 bytes, got 33"),
        ("k1:", "not valid base64"),
        ("bad kid:" + generate_master_key(), "key id 'bad kid'"),
        ("k1:" + generate_master_key() + "!!", "not valid base64"),
    ],
)
def test_a_malformed_entry_fails_naming_the_source_and_entry_never_the_key(entry: str, complaint: str) -> None:
    with pytest.raises(SecretError) as caught:
        KeyRing.parse(f"k0:{key_text()},{entry}", source="TALLYHUB_MASTER_KEYS")
    message = str(caught.value)
    assert "TALLYHUB_MASTER_KEYS, entry 2" in message and complaint in message
    assert entry.partition(":")[2] not in message or not entry.partition(":")[2]


def test_duplicate_kids_or_keys_are_refused() -> None:
    text = key_text()
    with pytest.raises(SecretError, match="appears twice"):
        ring(f"a:{text}", f"a:{key_text()}")
    with pytest.raises(SecretError, match="same master key appears twice"):
        ring(f"a:{text}", f"b:{text}")


def test_an_empty_ring_is_refused() -> None:
    with pytest.raises(SecretError, match="no master key"):
        KeyRing.parse(" , \n# nothing\n", source="TALLYHUB_MASTER_KEYS")


def test_urlsafe_and_standard_base64_both_decode_to_the_same_key() -> None:
    raw = b"\xfb\xff" * 16
    assert decode_master_key(base64.urlsafe_b64encode(raw).decode()) == raw
    assert decode_master_key(base64.b64encode(raw).decode()) == raw
    assert decode_master_key(base64.b64encode(raw).decode().rstrip("=")) == raw


# --- loading from settings ----------------------------------------------------------


def test_master_keys_from_the_environment_make_a_ring(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"TALLYHUB_DATA_DIR": str(tmp_path), "TALLYHUB_MASTER_KEYS": f"k2:{key_text()},k1:{key_text()}"}
    )
    assert load_key_ring(settings).kids == ["k2", "k1"]
    assert not ensure_master_key_file(settings), "no key file when the keys are given"
    assert not settings.master_key_path.exists()
    assert "k2:" not in repr(settings) and "master_keys=" not in repr(settings)


def test_the_single_key_variable_and_the_data_dir_file_still_work(tmp_path: Path) -> None:
    one = key_text()
    settings = Settings.from_env({"TALLYHUB_DATA_DIR": str(tmp_path), "TALLYHUB_MASTER_KEY": one})
    assert load_key_ring(settings).kids == [key_id_for(decode_master_key(one))]
    plain = Settings.from_env({"TALLYHUB_DATA_DIR": str(tmp_path)})
    with pytest.raises(NotInitialised):
        load_key_ring(plain)
    assert ensure_master_key_file(plain)
    assert len(load_key_ring(plain)) == 1
    assert not ensure_master_key_file(plain), "never overwrites"


def test_a_key_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"k1:{key_text()}\n")
    path.chmod(0o644)
    settings = Settings.from_env({"TALLYHUB_DATA_DIR": str(tmp_path), "TALLYHUB_MASTER_KEYS_FILE": str(path)})
    with pytest.raises(SecretError, match="readable by others"):
        load_key_ring(settings)
    path.chmod(0o600)
    assert load_key_ring(settings).kids == ["k1"]


def test_two_key_sources_at_once_are_refused(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "TALLYHUB_DATA_DIR": str(tmp_path),
            "TALLYHUB_MASTER_KEY": key_text(),
            "TALLYHUB_MASTER_KEYS": f"k1:{key_text()}",
        }
    )
    with pytest.raises(SecretError, match="set only one of"):
        load_key_ring(settings)


def test_a_malformed_single_key_names_its_variable(tmp_path: Path) -> None:
    settings = Settings.from_env({"TALLYHUB_DATA_DIR": str(tmp_path), "TALLYHUB_MASTER_KEY": "c2hvcnQ"})
    with pytest.raises(SecretError, match="TALLYHUB_MASTER_KEY: master key must be 32 bytes"):
        load_key_ring(settings)


# --- sealing and opening ------------------------------------------------------------


def test_an_envelope_opens_with_the_key_its_kid_names_among_several() -> None:
    k1, k2 = f"k1:{key_text()}", f"k2:{key_text()}"
    sealed_by_k1 = AesGcmKeyVault(ring(k1)).seal(SECRET, context=CONTEXT)
    assert AesGcmKeyVault(ring(k2, k1)).open(sealed_by_k1, context=CONTEXT) == SECRET


def test_a_key_given_a_name_later_still_opens_what_it_sealed_unnamed() -> None:
    text = key_text()
    sealed = AesGcmKeyVault(decode_master_key(text)).seal(SECRET, context=CONTEXT)
    assert AesGcmKeyVault(ring(f"k2:{key_text()}", f"old:{text}")).open(sealed, context=CONTEXT) == SECRET


def test_a_missing_kid_is_a_clear_error() -> None:
    sealed = AesGcmKeyVault(ring(f"k1:{key_text()}")).seal(SECRET, context=CONTEXT)
    with pytest.raises(SecretError, match="sealed under master key 'k1', which is not configured"):
        AesGcmKeyVault(ring(f"k2:{key_text()}")).open(sealed, context=CONTEXT)


def test_a_wrong_key_under_the_right_kid_is_a_clear_error() -> None:
    sealed = AesGcmKeyVault(ring(f"k1:{key_text()}")).seal(SECRET, context=CONTEXT)
    with pytest.raises(SecretError, match="could not be unwrapped with master key 'k1'"):
        AesGcmKeyVault(ring(f"k1:{key_text()}")).open(sealed, context=CONTEXT)


@pytest.mark.parametrize(
    "damage",
    [
        "tag",
        "body",
        "truncated",
        "empty",
        "wrapped_key",
        "key_nonce",
        "nonce",
        "not_base64",
        "missing",
        "not_a_string",
        "kid_swapped",
        "alg",
    ],
)
def test_a_damaged_envelope_never_opens(damage: str) -> None:
    vault = AesGcmKeyVault(ring(f"k1:{key_text()}", f"k0:{key_text()}"))
    sealed = vault.seal(SECRET, context=CONTEXT)
    changed: dict[str, object] = dict(sealed)
    if damage == "tag":
        changed["ciphertext"] = flip(sealed["ciphertext"], -1)
    elif damage == "body":
        changed["ciphertext"] = flip(sealed["ciphertext"], 0)
    elif damage == "truncated":
        changed["ciphertext"] = base64.b64encode(base64.b64decode(sealed["ciphertext"])[:-5]).decode()
    elif damage == "empty":
        changed["ciphertext"] = ""
    elif damage in ("wrapped_key", "key_nonce", "nonce"):
        changed[damage] = flip(sealed[damage], 0)
    elif damage == "not_base64":
        changed["ciphertext"] = "%%%"
    elif damage == "missing":
        del changed["wrapped_key"]
    elif damage == "not_a_string":
        changed["nonce"] = None
    elif damage == "kid_swapped":
        changed["kid"] = "k0"
    elif damage == "alg":
        changed["alg"] = "A128CBC"
    with pytest.raises(SecretError) as caught:
        vault.open(changed, context=CONTEXT)  # type: ignore[arg-type]
    assert SECRET.decode() not in str(caught.value)


def test_a_secret_moved_to_another_record_does_not_open() -> None:
    vault = AesGcmKeyVault(ring(f"k1:{key_text()}"))
    sealed = vault.seal(SECRET, context=CONTEXT)
    with pytest.raises(SecretError, match="another record"):
        vault.open(sealed, context=b"tallyhub:credential:openai:other")


def test_the_vault_never_shows_key_material() -> None:
    text = key_text()
    vault = AesGcmKeyVault(ring(f"k1:{text}"))
    assert text not in repr(vault.ring) and text not in repr(list(vault.ring))
