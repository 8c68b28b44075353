"""AES-256-GCM envelope encryption.

Each secret gets its own random 256-bit data key; the secret is sealed with the data
key and the data key is wrapped with the master key named by ``kid``. The caller's
``context`` (e.g. the credential id) is bound as associated data, so a sealed
secret cannot be moved to another record. Opening never returns unauthenticated
bytes: a wrong key or any changed byte raises ``SecretError``.
"""

import base64
import hashlib
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domain.errors import SecretError

MASTER_KEY_BYTES = 32
NONCE_BYTES = 12


def key_id_for(master_key: bytes) -> str:
    return hashlib.sha256(b"tallyhub-kid:" + master_key).hexdigest()[:16]


def decode_master_key(text: str) -> bytes:
    """A master key is 32 random bytes written as URL-safe base64."""
    try:
        raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (ValueError, TypeError):
        raise SecretError("master key is not valid base64") from None
    if len(raw) != MASTER_KEY_BYTES:
        raise SecretError(f"master key must be {MASTER_KEY_BYTES} bytes, got {len(raw)}")
    return raw


def generate_master_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(MASTER_KEY_BYTES)).decode().rstrip("=")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


class AesGcmKeyVault:
    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != MASTER_KEY_BYTES:
            raise SecretError(f"master key must be {MASTER_KEY_BYTES} bytes")
        self._master = AESGCM(master_key)
        self.kid = key_id_for(master_key)

    def seal(self, plaintext: bytes, *, context: bytes) -> dict[str, str]:
        data_key = AESGCM.generate_key(bit_length=256)
        key_nonce, nonce = os.urandom(NONCE_BYTES), os.urandom(NONCE_BYTES)
        wrapped = self._master.encrypt(key_nonce, data_key, self.kid.encode())
        ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, context)
        return {
            "alg": "A256GCM",
            "kid": self.kid,
            "wrapped_key": _b64(wrapped),
            "key_nonce": _b64(key_nonce),
            "nonce": _b64(nonce),
            "ciphertext": _b64(ciphertext),
        }

    def open(self, sealed: dict[str, str], *, context: bytes) -> bytes:
        if sealed.get("alg") != "A256GCM":
            raise SecretError("unknown sealing algorithm")
        if sealed.get("kid") != self.kid:
            raise SecretError(f"secret was sealed under master key {sealed.get('kid')!r}, which is not loaded")
        try:
            data_key = self._master.decrypt(_unb64(sealed["key_nonce"]), _unb64(sealed["wrapped_key"]), self.kid.encode())
            return AESGCM(data_key).decrypt(_unb64(sealed["nonce"]), _unb64(sealed["ciphertext"]), context)
        except (InvalidTag, KeyError, ValueError):
            raise SecretError("secret could not be opened: wrong key or tampered ciphertext") from None
