"""Progress a person can read, from inside a phase notebook: the named step, done / total and an ETA.

Under `avalanche-nb run` each update is appended as one JSON line to ``$AVALANCHE_NB_PROGRESS`` (a file
in the phase's staging folder), which the runner prints as it goes; in an interactive session it is a
tqdm bar instead. Nothing goes into the executed notebook, and ``progress: false`` silences both.

    for g in progress.track(gains, "sweep all", unit="gain"):
        ...
"""

from __future__ import annotations

import json
import os
import time
from typing import Iterable, Iterator, TypeVar

ENV = "AVALANCHE_NB_PROGRESS"  # set by the runner for the kernel: where progress lines go
ENABLED = True  # runtime.start sets it from the params' `progress`

T = TypeVar("T")


def _emit(record: dict) -> None:
    with open(os.environ[ENV], "a") as f:
        f.write(json.dumps(record) + "\n")


def track(items: Iterable[T], step: str, unit: str = "item", total: int | None = None) -> Iterator[T]:
    """Yield ``items``, reporting after each one: ``step`` (what is being done), done / total ``unit`` s,
    seconds so far and the ETA at the mean pace so far."""
    items = list(items) if total is None and not hasattr(items, "__len__") else items
    total = len(items) if total is None else total
    if not ENABLED:
        yield from items
        return
    if not os.environ.get(ENV):
        from tqdm.auto import tqdm

        yield from tqdm(items, desc=step, total=total, unit=unit, leave=False)
        return
    t0 = time.perf_counter()
    _emit({"step": step, "done": 0, "total": total, "unit": unit, "elapsed": 0.0})
    for i, item in enumerate(items, 1):
        yield item
        elapsed = time.perf_counter() - t0
        _emit({"step": step, "done": i, "total": total, "unit": unit, "elapsed": round(elapsed, 1),
               "eta": round(elapsed / i * (total - i), 1)})


def describe(record: dict) -> str:
    """One terminal line for a progress record."""
    line = f"{record['step']}: {record['done']}/{record['total']} {record['unit']}s"
    if record["done"]:
        line += f", {_duration(record['elapsed'])} so far"
        if record["done"] < record["total"]:
            line += f", about {_duration(record['eta'])} left"
    return line


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
