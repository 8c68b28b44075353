"""The ports the application needs from the outside world. Adapters implement them;
tests use the fakes in tests/fakes.py."""

from datetime import datetime, timezone
from typing import Protocol


class KeyVault(Protocol):
    """Seals and opens secrets (provider credentials, the API-key pepper)."""

    def seal(self, plaintext: bytes, *, context: bytes) -> dict[str, str]: ...

    def open(self, sealed: dict[str, str], *, context: bytes) -> bytes: ...


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class ApiKeyScheme(Protocol):
    """Makes API keys and their keyed digests (see adapters/crypto/key_digest.py)."""

    def new_user_key(self) -> str: ...

    def new_admin_key(self) -> str: ...

    def visible_prefix(self, key: str) -> str: ...

    def digest(self, key: str) -> str: ...

    def matches(self, key: str, digest: str) -> bool: ...
