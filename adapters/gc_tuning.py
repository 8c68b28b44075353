"""Cyclic garbage collection for long-running serving processes (``serve``, ``worker``).

Measured on this project's gateway (SQLite, c=32, 4,000 requests): with CPython's default
thresholds (700, 10, 10) the collector ran 768 times — 0.82 s, about 0.2 ms of CPU per
request and a tenth of the process's CPU — mostly re-scanning the long-lived objects made
at startup (framework, routes, caches). ``gc.freeze()`` moves everything alive once the
process is built into a permanent generation that is never scanned, and a young-generation
threshold of 10,000 lets each request's short-lived objects die by reference counting
before a collection is due: the same run then made no collection at all. Reference cycles
are still collected, only less often.
"""

import gc

SERVING_THRESHOLDS = (10_000, 20, 100)


def tune_for_serving() -> None:
    """Call once the process has built what it keeps (services, app, caches)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVING_THRESHOLDS)
