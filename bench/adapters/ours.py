"""Adapter for our worker (pg-llm-worker) in the shared harness's form (see _template.py).

The no-op job runs the whole pipeline: claim with SKIP LOCKED, attempt row on the bookkeeping
connection, the job's savepoint, the ownership-fenced finish and COMMIT in the claiming
transaction. Logs are the production JSON lines at level info, written to .bench/logs/.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

import common
import psycopg
from ourworker import bq, configure_logs, migrate_fresh, worker_settings

from worker.job import Job
from worker.loop import Worker
from worker.registry import JobKind, Registry

if TYPE_CHECKING:
    # names only for annotations: bench/ab_tree.py runs this adapter against older trees
    from worker.executor import EventHook
    from worker.registry import JobConnection

NAME = "ours"
KIND = "bench.noop"
# a running job is a locked `pending` row whose status changes in the same commit as its
# result, so pending == not yet finished
PENDING_SQL = "SELECT count(*) FROM queue.jobs WHERE status = 'pending'"
LISTEN_NOTIFY = ("yes: statement-level trigger on queue.jobs NOTIFYs channel queue_jobs with "
                 "the kind; one LISTEN connection wakes the kind's slots; 1 s poll fallback")
# `short` is what docs/operations.md (Tuning) recommends for many short jobs: many jobs per
# claim (one durable commit for the batch) and three claims in flight. `bulk` is the same
# with 200 jobs per claim, for handlers that write nothing of their own (their savepoints
# get no subtransaction id; see Tuning). `default` is the library default, one job per
# claim: one durable commit per job. `c10` overlaps ten of those.
CONFIGS: dict[str, dict[str, Any]] = {
    "short": {"batch_size": 100, "concurrency": 3},
    "bulk": {"batch_size": 200, "concurrency": 3},
    "default": {"batch_size": 1, "concurrency": 1},
    "c10": {"batch_size": 1, "concurrency": 10},
}


def versions() -> dict[str, str]:
    return {p: version(p) for p in ("pg-llm-worker", "psycopg", "psycopg-pool")}


async def install(dsn: str) -> None:
    migrate_fresh(dsn)


class _Producer:
    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn

    async def enqueue_many(self, start: int, n: int) -> None:
        await self.conn.execute(bq("enqueue_many"), {"kind": KIND, "start": start, "n": n})

    async def enqueue_one(self, i: int) -> None:
        # autocommit: returns after COMMIT
        await self.conn.execute(bq("enqueue_one"), {"kind": KIND, "i": i})


@contextlib.asynccontextmanager
async def producer(dsn: str) -> AsyncIterator[_Producer]:
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    try:
        yield _Producer(conn)
    finally:
        await conn.close()


def registry(batch_size: int, concurrency: int) -> Registry:
    async def noop(conn: JobConnection, job: Job) -> None:
        common.job_started(job.payload["i"])

    reg = Registry()
    reg.register(JobKind(KIND, noop, batch_size=batch_size, concurrency=concurrency))
    return reg


async def run_worker(
    dsn: str, config: dict[str, Any], stop: asyncio.Event, ready: Callable[[], None],
    on_event: EventHook | None = None,
) -> None:
    batch_size = int(config.get("batch_size", 1))
    concurrency = int(config.get("concurrency", 1))
    configure_logs(f"ours-b{batch_size}-c{concurrency}", str(config.get("log_level", "info")))
    settings = worker_settings(dsn, shutdown_grace=10.0)
    # the debug hook only when asked for: older trees (bench/ab_tree.py) have none
    hook = {} if on_event is None else {"on_event": on_event}
    worker = Worker(settings, dsn, registry(batch_size, concurrency), **hook)

    async def stopper() -> None:
        await stop.wait()
        worker.stop()

    stopping = asyncio.create_task(stopper())
    try:
        await worker.run(on_ready=ready)
    finally:
        stopping.cancel()
