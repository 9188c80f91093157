"""The one clock of the benchmarks: CPU seconds of this process (all threads).

Steadier than wall time on a shared machine; every benchmark reports ratios of these, measured in
the same run.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

R = TypeVar("R")


def timed_result(fn: Callable[[], R]) -> tuple[float, R]:
    """(CPU seconds of this process spent in ``fn()``, its result)."""
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def timed(fn: Callable[[], object]) -> float:
    """CPU seconds of this process spent in ``fn()``."""
    return timed_result(fn)[0]
