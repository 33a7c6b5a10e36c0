"""The soak's kinds (WORKER_PLUGINS=soak_plugin): `soak.short`, a no-op the steady stream
is made of, and `soak.long`, which holds its claim as long as a model call would (the
payload's `seconds`), without using a model."""

from __future__ import annotations

import asyncio
import os

from worker.job import Job
from worker.registry import JobConnection, JobKind, Registry

SHORT, LONG = "soak.short", "soak.long"


async def short(conn: JobConnection, job: Job) -> None:
    """Does nothing: the claim, attempt and finish around it are the load."""


async def long(conn: JobConnection, job: Job) -> None:
    await asyncio.sleep(float(job.payload.get("seconds", 45)))


def register(registry: Registry) -> None:
    """WORKER_PLUGINS entry point; SOAK_KINDS picks which of the two this process runs."""
    wanted = os.environ.get("SOAK_KINDS", f"{SHORT},{LONG}").split(",")
    if SHORT in wanted:
        registry.register(JobKind(SHORT, short, batch_size=20, concurrency=2))
    if LONG in wanted:
        registry.register(JobKind(LONG, long, concurrency=int(os.environ.get("SOAK_LONG", "2")),
                                  timeout=600))
