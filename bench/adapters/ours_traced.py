"""Our adapter with timestamps along the pickup path, to show where the latency goes: the
NOTIFY reaching the worker, the claim returning, the attempt rows committed, the handler
starting. The timestamps come from the worker's debug hook (`Worker(on_event=...)`, see
worker.executor.EventHook); the trace is written to $BENCH_RESULTS/pickup_trace-<pid>.json
when the worker process exits.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ours
from ours import CONFIGS, KIND, LISTEN_NOTIFY, PENDING_SQL, install, producer, versions

NAME = "ours_traced"
__all__ = ["CONFIGS", "KIND", "LISTEN_NOTIFY", "NAME", "PENDING_SQL", "install", "producer",
           "run_worker", "versions"]
# the worker's events, under the names bench/report.py reads
STEPS = {"notified": "notify", "claimed": "claimed", "recorded": "recorded", "started": "handler"}
TRACE: dict[str, list[float]] = {step: [] for step in STEPS.values()}


def _record(event: str, job_id: int | None, at: float) -> None:
    step = STEPS.get(event)
    if step is not None:
        TRACE[step].append(at)


def _save() -> None:
    out = Path(os.environ.get("BENCH_RESULTS", Path(__file__).resolve().parents[1] / "results"))
    (out / f"pickup_trace-{os.getpid()}.json").write_text(json.dumps(TRACE))


async def run_worker(dsn: str, config: dict[str, Any], stop: Any, ready: Any) -> None:
    atexit.register(_save)
    await ours.run_worker(dsn, config, stop, ready, on_event=_record)
