"""Job kinds of the reliability suite, loaded into worker processes with WORKER_PLUGINS; each
success writes one test_effects row in the claiming transaction, so a double shows as two.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from psycopg import AsyncConnection

from worker.errors import FinalFailure, RetryLater
from worker.job import Job
from worker.registry import JobKind, Registry

Conn = AsyncConnection[dict[str, Any]]

EFFECT = b"INSERT INTO test_effects (job_id, attempt, worker_pid, note) VALUES (%s, %s, %s, %s)"


async def _effect(conn: Conn, job: Job, note: str) -> None:
    await conn.execute(EFFECT, (job.id, job.attempt, os.getpid(), note))


async def effect(conn: Conn, job: Job) -> dict[str, Any]:
    await _effect(conn, job, "effect")
    return {"attempt": job.attempt}


async def slow(conn: Conn, job: Job) -> dict[str, Any]:
    seconds = float(job.payload.get("seconds", 0.5))
    await asyncio.sleep(seconds)
    await _effect(conn, job, "slow")
    return {"slept": seconds}


async def retry(conn: Conn, job: Job) -> dict[str, Any]:
    """Fails (retryably) until attempt `succeed_on`; `final` fails for good at once (with
    error_code `code`, default chaos_final). The
    effect of a failing attempt is written too, and must roll back with its savepoint."""
    await _effect(conn, job, "retry")
    if job.payload.get("final"):
        raise FinalFailure(str(job.payload.get("code", "chaos_final")),
                           "this input can never work")
    if job.attempt < int(job.payload.get("succeed_on", 2)):
        raise RetryLater("chaos_retry", f"attempt {job.attempt} fails on purpose", delay=0.05)
    return {"attempt": job.attempt}


def register(registry: Registry) -> None:
    """WORKER_PLUGINS entry point: add this module's kinds to a worker's registry."""
    registry.register(JobKind(
        "chaos.effect", effect, batch_size=int(os.environ.get("CHAOS_EFFECT_BATCH", "10")),
        concurrency=2))
    registry.register(JobKind("chaos.slow", slow, concurrency=2, timeout=60))
    registry.register(JobKind("chaos.retry", retry))
