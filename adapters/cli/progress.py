"""A progress bar on standard error, drawn only when standard error is a terminal
(scripts reading ``--json`` from stdout never see it)."""

import sys
import time
from collections.abc import Callable
from typing import TextIO

WIDTH = 30


def progress_bar(label: str, stream: TextIO | None = None) -> Callable[[int, int], None] | None:
    """A ``(done, total)`` callback that redraws a bar at most ten times a second; None off a terminal."""
    out = stream or sys.stderr
    if not out.isatty():
        return None
    last_draw = [0.0]

    def draw(done: int, total: int) -> None:
        now = time.monotonic()
        finished = done >= total
        if not finished and now - last_draw[0] < 0.1:
            return
        last_draw[0] = now
        share = 1.0 if total <= 0 else min(done / total, 1.0)
        filled = int(share * WIDTH)
        out.write(f"\r{label} [{'#' * filled}{'.' * (WIDTH - filled)}] {share:6.1%} of {total:,} events")
        if finished:
            out.write("\n")
        out.flush()

    return draw
