"""Interpreter settings for long-running serving processes (``serve``, ``worker``): cyclic
garbage collection, and how long a thread waiting for the interpreter lock lets another keep it.

Measured on this project's gateway (SQLite, c=32, 4,000 requests): with CPython's default
thresholds (700, 10, 10) the collector ran 768 times — 0.82 s, about 0.2 ms of CPU per
request and a tenth of the process's CPU — mostly re-scanning the long-lived objects made
at startup (framework, routes, caches). ``gc.freeze()`` moves everything alive once the
process is built into a permanent generation that is never scanned, and a young-generation
threshold of 10,000 lets each request's short-lived objects die by reference counting
before a collection is due: the same run then made no collection at all. Reference cycles
are still collected, only less often.

The switch interval: every answer waits for its group commit (application/group_commit.py),
whose writer thread lets go of the interpreter lock at each call into SQLite and must then
win it back from the event loop, which keeps it, while busy, for up to the switch interval
(CPython's default 5 ms). At 0.5 ms a group commit took 21 % less time on average in six
alternating rounds at 50 ms upstream, c=32, on a machine loaded by other work; runs in which
other processes took the gateway's core showed less or nothing (docs/performance.md, "Issue 21:
where a group commit's milliseconds go"). A thread nobody waits for is never interrupted, so
a lone request pays nothing for it.
"""

import gc
import sys

SERVING_THRESHOLDS = (10_000, 20, 100)
SERVING_SWITCH_INTERVAL = 0.0005  # seconds; CPython's default is 0.005


def tune_for_serving() -> None:
    """Call once the process has built what it keeps (services, app, caches)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVING_THRESHOLDS)
    sys.setswitchinterval(SERVING_SWITCH_INTERVAL)
