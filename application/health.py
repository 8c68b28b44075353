"""Credential health as this process sees it: which credentials are cooling down after a
429 or a transient failure. It only orders and skips candidates — correctness never
depends on it, so it may be process-local. Refused credentials (401/403) are disabled
through the ledger instead, as events every process sees."""

import threading
import time

TRANSIENT_COOLDOWN_SECONDS = 5.0
RATE_LIMIT_COOLDOWN_SECONDS = 30.0
MAX_COOLDOWN_SECONDS = 600.0


class CredentialHealth:
    def __init__(self, clock: "callable[[], float]" = time.monotonic) -> None:  # type: ignore[valid-type]
        self._clock = clock
        self._cooling_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def cool_down(self, credential_id: str, seconds: float) -> None:
        until = self._clock() + min(max(seconds, 0.0), MAX_COOLDOWN_SECONDS)
        with self._lock:
            self._cooling_until[credential_id] = max(until, self._cooling_until.get(credential_id, 0.0))

    def cooling_for(self, credential_id: str) -> float:
        """Seconds left in this credential's cooldown (0 when it is usable)."""
        with self._lock:
            until = self._cooling_until.get(credential_id)
        return 0.0 if until is None else max(until - self._clock(), 0.0)

    def recovered(self, credential_id: str) -> None:
        with self._lock:
            self._cooling_until.pop(credential_id, None)
