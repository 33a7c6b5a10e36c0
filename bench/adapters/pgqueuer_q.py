"""pgqueuer adapter (asyncpg driver, as in the pgqueuer docs; PgQueuer.run = QueueManager +
SchedulerManager).

Copied from the team's shared harness (shared/bench-peers/adapters/pgqueuer_q.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from importlib.metadata import version

import asyncpg
import common
from pgqueuer import PgQueuer
from pgqueuer.adapters.drivers.asyncpg import AsyncpgDriver
from pgqueuer.adapters.persistence.queries import Queries

NAME = "pgqueuer"
# finished jobs are deleted from the `pgqueuer` table (in buffered batches) and logged in
# pgqueuer_log
PENDING_SQL = "SELECT count(*) FROM pgqueuer"
LISTEN_NOTIFY = (
    "yes: statement-level trigger on the pgqueuer table NOTIFYs channel ch_pgqueuer; "
    "worker LISTENs on its single asyncpg connection, dequeue_timeout 30 s fallback"
)
# library defaults: batch_size=10, max_concurrent_tasks=None (unlimited),
# durability 'durable' (all tables logged). max_concurrent_tasks must be >= 2*batch_size.
CONFIGS = {
    "default": {},
    "c10": {"batch_size": 5, "max_concurrent_tasks": 10},
}


def versions():
    return {p: version(p) for p in ("pgqueuer", "asyncpg")}


async def install(dsn):
    conn = await asyncpg.connect(dsn)
    try:
        await Queries(AsyncpgDriver(conn)).install()
    finally:
        await conn.close()


class _Producer:
    def __init__(self, queries):
        self.q = queries

    async def enqueue_many(self, start, n):
        await self.q.enqueue(
            ["noop"] * n, [str(k).encode() for k in range(start, start + n)], [0] * n
        )

    async def enqueue_one(self, i):
        await self.q.enqueue("noop", str(i).encode())


@contextlib.asynccontextmanager
async def producer(dsn):
    conn = await asyncpg.connect(dsn)
    try:
        yield _Producer(Queries(AsyncpgDriver(conn)))
    finally:
        await conn.close()


async def run_worker(dsn, config, stop, ready):
    conn = await asyncpg.connect(dsn)
    pgq = PgQueuer.from_asyncpg_connection(conn)

    @pgq.entrypoint("noop")
    async def noop(job):
        common.job_started(int(job.payload))

    async def stopper():
        await stop.wait()
        pgq.shutdown.set()

    st = asyncio.create_task(stopper())
    ready()
    try:
        await pgq.run(**config)
    finally:
        st.cancel()
        await conn.close()
