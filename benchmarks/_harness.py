"""Timing and reporting shared by the suites.

Each figure is one JSON line::

    {"suite", "name", "unit", "better": "higher"|"lower", "eventtape": number,
     "baseline": {"name", "value"} or null, "ratio": eventtape/baseline or null}

Both sides of a figure are measured in the same process, interleaved round by round, and the
best round of each is kept: on a shared, noisy machine the best round is the one least
disturbed, and interleaving exposes both sides to the same noise.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from collections.abc import Callable
from typing import Literal

Better = Literal["higher", "lower"]


def best_seconds(fn: Callable[[], None], rounds: int) -> float:
    """Return the fastest of ``rounds`` runs of ``fn``, in seconds, with GC paused."""
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        finally:
            gc.enable()
    return best


def emit(
    suite: str,
    name: str,
    unit: str,
    better: Better,
    eventtape: float,
    baseline: tuple[str, float] | None = None,
) -> None:
    """Print one figure as a JSON line."""
    record = {
        "suite": suite,
        "name": name,
        "unit": unit,
        "better": better,
        "eventtape": round(eventtape, 4),
        "baseline": None
        if baseline is None
        else {"name": baseline[0], "value": round(baseline[1], 4)},
        "ratio": None
        if baseline is None or baseline[1] == 0
        else round(eventtape / baseline[1], 3),
    }
    print(json.dumps(record), flush=True)
    sys.stdout.flush()
