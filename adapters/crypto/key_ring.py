"""A ring of master keys (key-encryption keys), each named by a key id (``kid``).

Written as text, a ring is entries separated by commas or newlines; an entry is
``kid:base64key`` or a bare ``base64key`` (its kid is then the key's fingerprint, the
id a single ``TALLYHUB_MASTER_KEY`` has always used). Blank lines and ``#`` comments
are skipped. **The first entry is the newest key**: it seals every new secret and is
what ``tallyhub secrets rotate-master`` re-wraps to; the others only open.

Invariants kept here:
- every key is exactly 32 bytes, every kid is unique, no key appears twice;
- a key is found by its kid, or else by its fingerprint (so ``old:KEY`` still opens
  what ``KEY`` sealed before it had a name); keys are never tried in turn;
- no message ever contains key material: errors name the source and the entry number.
"""

import base64
import binascii
import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from domain.errors import SecretError

MASTER_KEY_BYTES = 32
_KID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")


def fingerprint(key: bytes) -> str:
    """The kid of a key that was given without one (16 hex digits of a SHA-256)."""
    return hashlib.sha256(b"tallyhub-kid:" + key).hexdigest()[:16]


def decode_master_key(text: str) -> bytes:
    """32 random bytes written as base64 (URL-safe or standard, padding optional).

    Strict: a stray character, whitespace inside or a wrong length is an error."""
    text = text.strip()
    if not text or not _BASE64.fullmatch(text):
        raise SecretError("master key is not valid base64")
    standard = text.replace("-", "+").replace("_", "/").rstrip("=")
    try:
        raw = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SecretError("master key is not valid base64") from None
    if len(raw) != MASTER_KEY_BYTES:
        raise SecretError(f"master key must be {MASTER_KEY_BYTES} bytes, got {len(raw)}")
    return raw


@dataclass(frozen=True)
class MasterKey:
    kid: str
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != MASTER_KEY_BYTES:
            raise SecretError(f"master key {self.kid!r} must be {MASTER_KEY_BYTES} bytes")
        if not _KID.fullmatch(self.kid):
            raise SecretError(f"key id {self.kid!r} must be 1–64 letters, digits, '.', '_' or '-'")

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)


class KeyRing:
    def __init__(self, keys: Sequence[MasterKey]) -> None:
        if not keys:
            raise SecretError("the master key ring is empty")
        kids = [k.kid for k in keys]
        duplicate = next((kid for kid in kids if kids.count(kid) > 1), None)
        if duplicate:
            raise SecretError(f"key id {duplicate!r} appears twice in the master key ring")
        prints = [k.fingerprint for k in keys]
        if len(set(prints)) != len(prints):
            raise SecretError("the same master key appears twice in the ring (under different key ids)")
        self._keys = tuple(keys)

    @classmethod
    def single(cls, key: bytes) -> "KeyRing":
        return cls([MasterKey(fingerprint(key), key)])

    @classmethod
    def parse(cls, text: str, *, source: str) -> "KeyRing":
        """Entries from ``text``; ``source`` (a variable or file name) is named in errors."""
        keys = []
        for number, entry in enumerate(_entries(text), start=1):
            kid, sep, encoded = entry.partition(":")
            if not sep:
                kid, encoded = "", entry
            try:
                raw = decode_master_key(encoded)
                keys.append(MasterKey(kid.strip() or fingerprint(raw), raw))
            except SecretError as error:
                raise SecretError(f"{source}, entry {number}: {error}") from None
        if not keys:
            raise SecretError(f"{source} holds no master key")
        try:
            return cls(keys)
        except SecretError as error:
            raise SecretError(f"{source}: {error}") from None

    @property
    def newest(self) -> MasterKey:
        return self._keys[0]

    @property
    def kids(self) -> list[str]:
        return [k.kid for k in self._keys]

    def find(self, kid: str) -> MasterKey | None:
        """The key named ``kid``, else the key whose fingerprint is ``kid``."""
        for key in self._keys:
            if key.kid == kid:
                return key
        for key in self._keys:
            if key.fingerprint == kid:
                return key
        return None

    def __iter__(self) -> Iterator[MasterKey]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeyRing(kids={self.kids!r})"


def _entries(text: str) -> Iterator[str]:
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for entry in line.split(","):
            if entry.strip():
                yield entry.strip()
