"""AES-256-GCM envelope encryption under a ring of master keys.

Each secret gets its own random 256-bit data key; the secret is sealed with the data
key and the data key is wrapped with a master key, whose ``kid`` the envelope names
(and binds as the wrapped key's associated data). The caller's ``context`` (e.g. the
credential id) is bound as associated data of the secret, so a sealed secret cannot
be moved to another record.

Invariants kept here:
- new secrets are sealed under the ring's newest key; an envelope is opened with the
  key its ``kid`` names, never by trying keys in turn;
- opening never returns unauthenticated bytes: a missing or wrong key, a malformed
  envelope, a truncated or changed byte raises ``SecretError`` (which says which);
- there is no re-wrapping: a master-key rotation re-seals each secret (``seal``: a fresh
  data key), so no data key a retired master key once wrapped protects anything current
  (application/key_management.py, ``rotate_master``).
"""

import base64
import binascii
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from adapters.crypto.key_ring import MASTER_KEY_BYTES, KeyRing, MasterKey, decode_master_key, fingerprint
from domain.errors import SecretError

NONCE_BYTES = 12
DATA_KEY_BYTES = 32
ALGORITHM = "A256GCM"
FIELDS = ("alg", "kid", "wrapped_key", "key_nonce", "nonce", "ciphertext")

key_id_for = fingerprint  # the kid of a key configured without a name

__all__ = ["AesGcmKeyVault", "MASTER_KEY_BYTES", "decode_master_key", "generate_master_key", "key_id_for"]


def generate_master_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(MASTER_KEY_BYTES)).decode().rstrip("=")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(sealed: dict[str, str], name: str) -> bytes:
    try:
        return base64.b64decode(sealed[name], validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise SecretError(f"the sealed secret is malformed: {name} is not base64") from None


class AesGcmKeyVault:
    """Seals and opens secrets. Given bytes, it holds a one-key ring."""

    def __init__(self, keys: KeyRing | bytes) -> None:
        if isinstance(keys, (bytes, bytearray)):
            if len(keys) != MASTER_KEY_BYTES:
                raise SecretError(f"master key must be {MASTER_KEY_BYTES} bytes")
            keys = KeyRing.single(bytes(keys))
        self.ring = keys

    @property
    def kid(self) -> str:
        """The kid that new secrets are sealed under."""
        return self.ring.newest.kid

    def seal(self, plaintext: bytes, *, context: bytes) -> dict[str, str]:
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, context)
        return {"alg": ALGORITHM, **self._wrap(data_key), "nonce": _b64(nonce), "ciphertext": _b64(ciphertext)}

    def open(self, sealed: dict[str, str], *, context: bytes) -> bytes:
        data_key = self._unwrap(sealed)
        nonce, ciphertext = _unb64(sealed, "nonce"), _unb64(sealed, "ciphertext")
        if len(nonce) != NONCE_BYTES:
            raise SecretError("the sealed secret is malformed: the nonce has the wrong length")
        try:
            return AESGCM(data_key).decrypt(nonce, ciphertext, context)
        except InvalidTag:
            raise SecretError(
                "the sealed secret failed authentication: its ciphertext was truncated or "
                "tampered with, or it belongs to another record"
            ) from None

    @staticmethod
    def kid_of(sealed: dict[str, str]) -> str:
        kid = sealed.get("kid") if isinstance(sealed, dict) else None
        if not isinstance(kid, str) or not kid:
            raise SecretError("the sealed secret is malformed: it names no master key id")
        return kid

    def _wrap(self, data_key: bytes) -> dict[str, str]:
        newest = self.ring.newest
        key_nonce = os.urandom(NONCE_BYTES)
        wrapped = AESGCM(newest.key).encrypt(key_nonce, data_key, newest.kid.encode())
        return {"kid": newest.kid, "wrapped_key": _b64(wrapped), "key_nonce": _b64(key_nonce)}

    def _unwrap(self, sealed: dict[str, str]) -> bytes:
        master = self._key_for(sealed)
        kid = sealed["kid"]
        key_nonce, wrapped = _unb64(sealed, "key_nonce"), _unb64(sealed, "wrapped_key")
        if len(key_nonce) != NONCE_BYTES:
            raise SecretError("the sealed secret is malformed: the key nonce has the wrong length")
        try:
            data_key = AESGCM(master.key).decrypt(key_nonce, wrapped, kid.encode())
        except InvalidTag:
            raise SecretError(
                f"the data key could not be unwrapped with master key {kid!r}: the configured key "
                "is not the one that sealed it, or the wrapped key was tampered with"
            ) from None
        if len(data_key) != DATA_KEY_BYTES:
            raise SecretError("the sealed secret is malformed: the data key has the wrong length")
        return data_key

    def _key_for(self, sealed: dict[str, str]) -> MasterKey:
        kid = self.kid_of(sealed)
        if sealed.get("alg") != ALGORITHM:
            raise SecretError("the sealed secret is malformed: unknown sealing algorithm")
        missing = [name for name in FIELDS if not isinstance(sealed.get(name), str)]
        if missing:
            raise SecretError(f"the sealed secret is malformed: {', '.join(missing)} missing")
        master = self.ring.find(kid)
        if master is None:
            raise SecretError(
                f"the secret was sealed under master key {kid!r}, which is not configured "
                f"(configured: {', '.join(self.ring.kids)})"
            )
        return master
