"""Shared helpers for the queue benchmark (imported by adapters and worker_main).

Copied from the team's shared harness (shared/bench-peers/common.py). Adapters call
``job_started(i)`` as the *first* thing in their job body. In drain mode no stamp file is
configured, so it is a single attribute check (the job is effectively a no-op). In latency
mode the worker opens a stamp file and every job appends ``"<i> <time.time()>"`` to it.
"""

from __future__ import annotations

import time
from typing import TextIO

_stamp_file: TextIO | None = None


def set_stamp_file(path: str | None) -> None:
    global _stamp_file
    # line-buffered, and open for the worker's whole life
    _stamp_file = open(path, "a", buffering=1) if path else None


def job_started(i: object) -> None:
    f = _stamp_file
    if f is not None:
        f.write(f"{i} {time.time():.6f}\n")
