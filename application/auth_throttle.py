"""Failed-authentication throttling: a client address that failed to authenticate
``limit`` times within ``window`` seconds is refused (429) without its key being checked
until the oldest of those failures is ``window`` seconds old.

Invariants:
- an address with no recent failure costs one dict lookup (``retry_after`` is the only
  call on the success path); a successful authentication is never slowed or recorded;
- memory is bounded: at most ``max_addresses`` addresses are tracked (the least recently
  failing is forgotten first), each with at most ``limit`` failure times;
- the state is per process: with several ``serve`` workers or hosts an address may fail
  ``limit`` times in each before it is refused everywhere.

The caller (adapters/http) names the address; behind a reverse proxy that is the address
the server was told (uvicorn's proxy headers), or every client shares the proxy's.
"""

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

DEFAULT_LIMIT = 20
DEFAULT_WINDOW_SECONDS = 60.0
DEFAULT_MAX_ADDRESSES = 10_000


class AuthThrottle:
    def __init__(
        self,
        limit: int = DEFAULT_LIMIT,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        *,
        max_addresses: int = DEFAULT_MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``limit`` 0 turns throttling off."""
        self.limit = limit
        self.window = window_seconds
        self.max_addresses = max_addresses
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, address: str | None) -> int:
        """Seconds until ``address`` may try again; 0 when it may now."""
        failures = self._failures.get(address) if address is not None else None
        if failures is None:
            return 0
        return self._wait(address, failures)  # type: ignore[arg-type]

    def failed(self, address: str | None) -> None:
        """Record one failed authentication from ``address``."""
        if address is None or self.limit <= 0:
            return
        failures = self._failures.get(address)
        if failures is None:
            failures = self._failures[address] = deque(maxlen=self.limit)
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(address)
        failures.append(self.clock())

    def _wait(self, address: str, failures: deque[float]) -> int:
        now = self.clock()
        while failures and now - failures[0] >= self.window:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return 0
        if len(failures) < self.limit:
            return 0
        return max(1, math.ceil(self.window - (now - failures[0])))
