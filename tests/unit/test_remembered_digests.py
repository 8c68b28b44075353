"""A presented API key's digest is remembered (adapters/crypto/remembered_digests.py): a key
presented again costs no HMAC, the digest is the HMAC of that key whether remembered or not,
random keys never grow the memory past its bound, and a revoked or rotated key is refused as
fast as before: at once in this process, within the read cache's seconds from another."""

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.bootstrap import in_memory_ledger
from adapters.crypto.aes_gcm import AesGcmKeyVault, generate_master_key
from adapters.crypto.key_digest import HmacApiKeyScheme
from adapters.crypto.key_ring import KeyRing
from adapters.crypto.remembered_digests import RememberedDigests
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.ledger import Ledger
from domain.errors import AuthenticationFailed

PEPPER = b"p" * 32
UNCOUNTED_HMAC = hmac.new


def hmac_of(key: str) -> str:
    return UNCOUNTED_HMAC(PEPPER, key.encode(), hashlib.sha256).hexdigest()


@pytest.fixture
def hmacs(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The keys the HMAC was computed for, from here on."""
    computed: list[bytes] = []

    def counted(key: bytes, msg: bytes, digestmod: Any) -> Any:
        computed.append(msg)
        return UNCOUNTED_HMAC(key, msg, digestmod)

    monkeypatch.setattr(hmac, "new", counted)
    return computed


def test_a_key_presented_again_costs_no_hmac(hmacs: list[bytes]) -> None:
    scheme = HmacApiKeyScheme(PEPPER)
    key = scheme.new_user_key()
    digests = {scheme.digest(key) for _ in range(5)}
    assert digests == {hmac_of(key)}
    assert hmacs == [key.encode()]


def test_a_key_in_use_stays_remembered_through_a_flood_of_random_keys(hmacs: list[bytes]) -> None:
    scheme = HmacApiKeyScheme(PEPPER, remembered=16)
    key = scheme.new_user_key()
    for _ in range(20):
        for _ in range(15):  # fewer new keys than a generation holds between two uses
            scheme.digest(secrets.token_urlsafe(32))
        assert scheme.digest(key) == hmac_of(key)
    assert hmacs.count(key.encode()) == 1


def test_random_keys_never_grow_the_memory_past_two_generations() -> None:
    memory = RememberedDigests(capacity=50)
    for _ in range(1_000):
        memory.put(os.urandom(32), "digest")
        assert len(memory) <= 100


def test_nothing_of_a_presented_key_is_shown() -> None:
    scheme = HmacApiKeyScheme(PEPPER)
    key = scheme.new_user_key()
    scheme.digest(key)
    fingerprint = hashlib.sha256(key.encode())
    for shown in (repr(scheme), str(scheme), repr(scheme._remembered)):
        assert key not in shown and fingerprint.hexdigest() not in shown and repr(fingerprint.digest()) not in shown


keys = st.one_of(st.sampled_from(["thk_a", "thk_b", "tha_c", "", "thk_é"]), st.text(max_size=50))


@settings(max_examples=300, deadline=None)
@given(presented=st.lists(keys, max_size=60), capacity=st.integers(1, 5))
def test_a_digest_remembered_or_not_is_the_hmac_of_the_key_presented(presented: list[str], capacity: int) -> None:
    scheme = HmacApiKeyScheme(PEPPER, remembered=capacity)
    for key in presented:
        assert scheme.digest(key) == hmac_of(key)
        assert scheme.matches(key, hmac_of(key))
    assert len(scheme._remembered) <= 2 * capacity


@settings(max_examples=300, deadline=None)
@given(operations=st.lists(st.tuples(st.booleans(), st.binary(min_size=1, max_size=2)), max_size=80))
def test_the_memory_answers_only_what_was_put_and_nothing_else(operations: list[tuple[bool, bytes]]) -> None:
    """Against a model that remembers everything: a hit is always the value put for that
    fingerprint, the last put is always found, and the size stays within two generations."""
    memory, model = RememberedDigests(capacity=3), {}
    for put, fingerprint in operations:
        if put:
            memory.put(fingerprint, fingerprint.hex())
            model[fingerprint] = fingerprint.hex()
            assert memory.get(fingerprint) == fingerprint.hex()
        else:
            assert memory.get(fingerprint) in (None, model.get(fingerprint))
            assert fingerprint in model or memory.get(fingerprint) is None
        assert len(memory) <= 6


# --- the key's usability is still read on every request ------------------------------


def issued_key(ledger: Ledger) -> tuple[str, str]:
    Accounts(ledger).create_account("acme")
    issued = ApiKeys(ledger).issue_api_key("acme")
    return str(issued.key_id), issued.plaintext


def presented_twice(ledger: Ledger, key: str) -> None:
    """Authenticated twice: its digest is remembered and the key is in the read cache."""
    ledger.authenticate(key)
    ledger.authenticate(key)


@pytest.mark.parametrize("change", ["revoke", "rotate"])
def test_a_key_revoked_or_rotated_here_is_refused_at_once_though_its_digest_is_remembered(change: str) -> None:
    ledger = in_memory_ledger(read_cache_seconds=60)
    ledger.initialise()
    key_id, key = issued_key(ledger)
    presented_twice(ledger, key)
    if change == "revoke":
        ApiKeys(ledger).revoke_api_key(key_id)
    else:
        ApiKeys(ledger).rotate_api_key(key_id)
    with pytest.raises(AuthenticationFailed):
        ledger.authenticate(key)
    with pytest.raises(AuthenticationFailed):
        ledger.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B"))  # one character off: unknown
    ledger.close()


@contextmanager
def two_processes(path: Path, read_cache_seconds: float) -> Iterator[tuple[Ledger, Ledger]]:
    """Two ledgers on one SQLite store, as ``serve`` and the CLI are: the first serves with a
    read cache, the second changes keys."""
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(path / "store.sqlite"),
        "CREATE_TABLE": "y",
    }
    ring = KeyRing.parse(f"k1:{generate_master_key()}", source="TEST")

    def opened(**options: Any) -> Ledger:
        return Ledger(env, vault=AesGcmKeyVault(ring), key_scheme_factory=HmacApiKeyScheme, **options)

    other = opened()
    other.initialise()
    serving = opened(read_cache_seconds=read_cache_seconds)
    try:
        yield serving, other
    finally:
        serving.close()
        other.close()


def refused(authenticate: Callable[[str], object], key: str) -> bool:
    try:
        authenticate(key)
    except AuthenticationFailed:
        return True
    return False


@pytest.mark.parametrize("read_cache_seconds", [0.0, 0.3])
def test_a_key_revoked_elsewhere_is_refused_once_the_read_cache_is_that_old(
    tmp_path: Path, read_cache_seconds: float
) -> None:
    with two_processes(tmp_path, read_cache_seconds) as (serving, other):
        key_id, key = issued_key(other)
        presented_twice(serving, key)
        ApiKeys(other).revoke_api_key(key_id)
        time.sleep(read_cache_seconds * 1.2)
        assert refused(serving.authenticate, key)
