"""Job kinds used by the tests, loaded into real worker processes with WORKER_PLUGINS.

Their side effects go to tables the tests create, inside the claiming transaction.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

from psycopg import AsyncConnection

from worker.errors import FinalFailure, RetryLater
from worker.job import Job
from worker.registry import JobKind, Registry

Conn = AsyncConnection[dict[str, Any]]


async def _effect(conn: Conn, job: Job, note: str = "") -> None:
    await conn.execute(
        b"INSERT INTO test_effects (job_id, attempt, worker_pid, note) VALUES (%s, %s, %s, %s)",
        (job.id, job.attempt, os.getpid(), note),
    )


async def _mark_started(conn: Conn, job: Job) -> None:
    # visible to the test at once: written on a separate autocommit connection
    dsn = conn.info.dsn
    async with await AsyncConnection.connect(dsn, autocommit=True,
                                             password=conn.info.password) as side:
        await side.execute(
            b"INSERT INTO test_started (job_id, attempt, worker_pid) VALUES (%s, %s, %s)",
            (job.id, job.attempt, os.getpid()),
        )


async def effect(conn: Conn, job: Job) -> dict[str, Any]:
    await _effect(conn, job)
    return {"ok": True}


async def slow(conn: Conn, job: Job) -> dict[str, Any]:
    await _mark_started(conn, job)
    await asyncio.sleep(float(job.payload.get("seconds", 1.0)))
    await _effect(conn, job, "slow")
    return {"slept": job.payload.get("seconds", 1.0)}


async def poison(conn: Conn, job: Job) -> None:
    await _mark_started(conn, job)
    os.kill(os.getpid(), signal.SIGKILL)


async def flaky(conn: Conn, job: Job) -> None:
    await _effect(conn, job, "flaky")
    if job.payload.get("final"):
        raise FinalFailure("bad_input", "this input can never work")
    raise RetryLater("upstream_busy", "try again", delay=float(job.payload.get("delay", 0)))


async def wedge(conn: Conn, job: Job) -> None:
    await _mark_started(conn, job)
    # blocks the whole event loop, as a CPU-bound or blocking call in a handler would
    time.sleep(float(job.payload.get("seconds", 2.0)))  # noqa: ASYNC251 - the point of the test


def register(registry: Registry) -> None:
    """WORKER_PLUGINS entry point: add this module's kinds to a worker's registry."""
    registry.register(JobKind(
        "test.effect", effect, batch_size=int(os.environ.get("TEST_EFFECT_BATCH", "20")),
        concurrency=int(os.environ.get("TEST_EFFECT_CONCURRENCY", "2"))))
    registry.register(JobKind("test.slow", slow, concurrency=2, timeout=120))
    registry.register(JobKind("test.poison", poison))
    registry.register(JobKind("test.flaky", flaky))
    registry.register(JobKind("test.wedge", wedge))
