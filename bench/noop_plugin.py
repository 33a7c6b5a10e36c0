"""A plugin module (WORKER_PLUGINS=noop_plugin) that registers the benchmark's no-op kind on
the shared registry, so the real `python -m worker run` process can be loaded with it."""

from __future__ import annotations

from worker.job import Job
from worker.registry import JobConnection, JobKind, Registry

KIND = "bench.noop"


async def noop(conn: JobConnection, job: Job) -> None:
    """Does nothing; the pipeline around it (claim, attempt, savepoint, finish) is the load."""


def register(registry: Registry) -> None:
    """WORKER_PLUGINS entry point: add this module's kinds to a worker's registry."""
    registry.register(JobKind(KIND, noop, batch_size=100, concurrency=3))
