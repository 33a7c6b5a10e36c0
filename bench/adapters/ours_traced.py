"""Our adapter with timestamps along the pickup path, to show where the latency goes: the
NOTIFY reaching the worker, the claim returning, the attempt rows committed, the handler
starting. Wraps the worker's functions from outside (worker/ is not changed); the trace is
written to $BENCH_RESULTS/pickup_trace-<pid>.json when the worker process exits.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import ours
from ours import CONFIGS, KIND, LISTEN_NOTIFY, PENDING_SQL, install, producer, versions

from worker import attempts, loop

NAME = "ours_traced"
__all__ = ["CONFIGS", "KIND", "LISTEN_NOTIFY", "NAME", "PENDING_SQL", "install", "producer",
           "run_worker", "versions"]
TRACE: dict[str, list[float]] = {"notify": [], "claimed": [], "recorded": [], "handler": []}


def _patch() -> None:
    wake, record, started = loop.Worker.wake, attempts.Bookkeeper.record, common.job_started

    def traced_wake(self: loop.Worker, kind: str | None) -> None:
        if kind is not None:
            TRACE["notify"].append(time.time())
        wake(self, kind)

    async def traced_record(self: attempts.Bookkeeper, job_ids: list[int], claim_xid: str,
                            worker_id: str) -> list[dict[str, Any]]:
        TRACE["claimed"].append(time.time())
        rows = await record(self, job_ids, claim_xid, worker_id)
        TRACE["recorded"].append(time.time())
        return rows

    def traced_started(i: object) -> None:
        TRACE["handler"].append(time.time())
        started(i)

    loop.Worker.wake = traced_wake  # type: ignore[method-assign]
    attempts.Bookkeeper.record = traced_record  # type: ignore[method-assign]
    common.job_started = traced_started


def _save() -> None:
    out = Path(os.environ.get("BENCH_RESULTS", Path(__file__).resolve().parents[1] / "results"))
    (out / f"pickup_trace-{os.getpid()}.json").write_text(json.dumps(TRACE))


async def run_worker(dsn: str, config: dict[str, Any], stop: Any, ready: Any) -> None:
    _patch()
    atexit.register(_save)
    await ours.run_worker(dsn, config, stop, ready)
