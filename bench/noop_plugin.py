"""A plugin module (WORKER_PLUGINS=noop_plugin) that registers the benchmark's no-op kind on
the shared registry, so the real `python -m worker run` process can be loaded with it."""

from __future__ import annotations

from worker.job import Job
from worker.registry import Conn, registry

KIND = "bench.noop"


@registry.kind(KIND, batch_size=100, concurrency=3)
async def noop(conn: Conn, job: Job) -> None:
    """Does nothing; the pipeline around it (claim, attempt, savepoint, finish) is the load."""
