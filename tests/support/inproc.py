"""An in-process worker for integration tests, with its own registry of handlers, and the
small async helpers its tests share: a query, a side effect, "nothing pending"."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row

from worker.config import Settings
from worker.executor import EventHook
from worker.job import Job
from worker.loop import Worker
from worker.registry import JobConnection, JobKind, Registry

AConn = psycopg.AsyncConnection[dict[str, Any]]


@contextlib.asynccontextmanager
async def running_worker(dsn: str, registry: Registry, *, on_event: EventHook | None = None,
                         model_answers: Callable[[], Awaitable[str]] | None = None,
                         **overrides: Any) -> AsyncIterator[Worker]:
    values: dict[str, Any] = {
        "database_url": dsn, "worker_id": f"test-{uuid.uuid4().hex[:6]}", "poll_interval": 0.3,
        "shutdown_grace": 5.0, "retry_base": 0.05, "retry_cap": 0.2,
    }
    values.update(overrides)
    worker = Worker(Settings(**values), dsn, registry, on_event=on_event,
                    model_answers=model_answers)
    task = asyncio.create_task(worker.run())
    ready = asyncio.create_task(worker.ready.wait())
    await asyncio.wait([task, ready], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()
    assert worker.ready.is_set(), "worker did not become ready"
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)


async def until(predicate: Any, within: float = 20, interval: float = 0.05,
                message: str = "condition") -> Any:
    """Await an async predicate until truthy; fail after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        await asyncio.sleep(interval)


def registry_of(*kinds: JobKind) -> Registry:
    registry = Registry()
    for kind in kinds:
        registry.register(kind)
    return registry


async def aconnect(dsn: str) -> AConn:
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True, row_factory=dict_row)


async def fetch(dsn: str, query: str, params: Any = None) -> list[dict[str, Any]]:
    """Run one statement on its own autocommit connection; the rows, if it returns any."""
    async with await aconnect(dsn) as conn:
        cur = await conn.execute(query.encode(), params)
        return await cur.fetchall()


async def effect(conn: JobConnection, job: Job, note: str = "") -> None:
    """The side effect of a test handler, written inside the job's claim (test_effects)."""
    await conn.execute(b"INSERT INTO test_effects (job_id, attempt, worker_pid, note) "
                       b"VALUES (%s, %s, 0, %s)", (job.id, job.attempt, note))


async def none_pending(dsn: str, kind: str | None = None) -> bool:
    """No job (of `kind`, if given) is pending any more."""
    rows = await fetch(dsn, "SELECT count(*) AS n FROM queue.jobs WHERE status = 'pending' "
                            "AND kind = coalesce(%s, kind)", (kind,))
    return bool(rows[0]["n"] == 0)
