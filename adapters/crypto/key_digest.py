"""API keys: high-entropy random text shown once, stored only as HMAC-SHA256 under a
server-side pepper, compared in constant time.

What may be shown of a key afterwards (its ``visible_prefix``) is its kind and its last
4 characters, ``thk_…x9Qz``: PRODUCT.md's masking rule, the same as a provider
credential's hint. Authentication never looks at it: a key is found by its digest.

A key presented again is not digested again: its digest is remembered by the key's SHA-256
(adapters/crypto/remembered_digests.py, which states what that may and may not do)."""

import hashlib
import hmac
import secrets

from adapters.crypto.remembered_digests import RememberedDigests

USER_KEY_PREFIX = "thk_"
ADMIN_KEY_PREFIX = "tha_"
SHOWN_TAIL_CHARS = 4
REMEMBERED_DIGESTS = 8_192  # a generation; with the older one at most 16,384, as domain/ids.py's api_key_id


class HmacApiKeyScheme:
    def __init__(self, pepper: bytes, *, remembered: int = REMEMBERED_DIGESTS) -> None:
        """``remembered``: how many digests a generation of ``RememberedDigests`` holds."""
        if len(pepper) < 32:
            raise ValueError("pepper must be at least 32 bytes")
        self._pepper = pepper
        self._remembered = RememberedDigests(remembered)

    def new_user_key(self) -> str:
        return USER_KEY_PREFIX + secrets.token_urlsafe(32)

    def new_admin_key(self) -> str:
        return ADMIN_KEY_PREFIX + secrets.token_urlsafe(32)

    def visible_prefix(self, key: str) -> str:
        """The key's kind (``thk_``/``tha_``) and its last 4 characters; nothing else of it."""
        kind = key[: len(USER_KEY_PREFIX)] if key.startswith((USER_KEY_PREFIX, ADMIN_KEY_PREFIX)) else ""
        tail = key[-SHOWN_TAIL_CHARS:] if len(key) >= 4 * SHOWN_TAIL_CHARS else ""
        return f"{kind}…{tail}"

    def digest(self, key: str) -> str:
        presented = key.encode()
        fingerprint = hashlib.sha256(presented).digest()
        digest = self._remembered.get(fingerprint)
        if digest is None:
            digest = hmac.new(self._pepper, presented, hashlib.sha256).hexdigest()
            self._remembered.put(fingerprint, digest)
        return digest

    def matches(self, key: str, digest: str) -> bool:
        return hmac.compare_digest(self.digest(key), digest)
