"""API keys: high-entropy random text shown once, stored only as HMAC-SHA256 under a
server-side pepper, compared in constant time."""

import hashlib
import hmac
import secrets

USER_KEY_PREFIX = "thk_"
ADMIN_KEY_PREFIX = "tha_"
VISIBLE_PREFIX_CHARS = 12


class HmacApiKeyScheme:
    def __init__(self, pepper: bytes) -> None:
        if len(pepper) < 32:
            raise ValueError("pepper must be at least 32 bytes")
        self._pepper = pepper

    def new_user_key(self) -> str:
        return USER_KEY_PREFIX + secrets.token_urlsafe(32)

    def new_admin_key(self) -> str:
        return ADMIN_KEY_PREFIX + secrets.token_urlsafe(32)

    def visible_prefix(self, key: str) -> str:
        return key[:VISIBLE_PREFIX_CHARS]

    def digest(self, key: str) -> str:
        return hmac.new(self._pepper, key.encode(), hashlib.sha256).hexdigest()

    def matches(self, key: str, digest: str) -> bool:
        return hmac.compare_digest(self.digest(key), digest)
