"""``RememberedDigests``: the keyed digests of API keys presented lately, so that a key's HMAC
is computed once, not on every request (issue 21: OpenSSL's HMAC set-up was about 26,000
instructions of each request; docs/performance.md).

A digest is found by the *fingerprint* of the presented key, its plain SHA-256, which
adapters/crypto/key_digest.py computes.

Invariants:
- it only saves work: what it hands back for a fingerprint is the digest computed from the key
  with that fingerprint (a second key with the same SHA-256 is out of reach), so it never makes
  an unknown key known. Whether a key exists, and whether it is still usable (revoked, rotated,
  expired), is decided by ``Ledger.authenticate`` on every request, as without it;
- it keeps no secret: a fingerprint does not give the key back (a key is 256 random bits),
  and nothing of it is logged or shown (no ``repr`` of its contents);
- it is bounded, and costs an attacker's random keys nothing but their room: two generations of
  at most ``capacity`` entries; when the newer is full it becomes the older and the older is
  dropped whole (no eviction per entry, nothing scanned); a digest found only in the older is
  carried into the newer, so a key in use stays. A key pushed out by a flood of new ones costs
  its HMAC once more, as every request did before.
"""


class RememberedDigests:
    __slots__ = ("capacity", "_newer", "_older")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._newer: dict[bytes, str] = {}
        self._older: dict[bytes, str] = {}

    def __len__(self) -> int:
        return len(self._newer) + len(self._older)

    def get(self, fingerprint: bytes) -> str | None:
        digest = self._newer.get(fingerprint)
        if digest is None:
            digest = self._older.get(fingerprint)
            if digest is not None:
                self.put(fingerprint, digest)
        return digest

    def put(self, fingerprint: bytes, digest: str) -> None:
        # Replaced, never cleared in place: a thread reading the older one meanwhile still finds it.
        if len(self._newer) >= self.capacity:
            self._older, self._newer = self._newer, {}
        self._newer[fingerprint] = digest
