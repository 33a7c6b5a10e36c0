"""procrastinate adapter (psycopg3 async connector, async no-op task).

Copied from the team's shared harness (shared/bench-peers/adapters/procrastinate_q.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from importlib.metadata import version

import common
import procrastinate

NAME = "procrastinate"
# done jobs stay in the table with status 'succeeded' (delete_jobs defaults to never)
PENDING_SQL = "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
LISTEN_NOTIFY = (
    "yes: per-row AFTER INSERT trigger pg_notify('procrastinate_any_queue_v1'/...); "
    "worker LISTENs (listen_notify=True default), polling fallback every 5 s"
)
# procrastinate default concurrency is 1; everything else left at library defaults
CONFIGS = {
    "default": {},
    "c10": {"concurrency": 10},
}


def versions():
    return {p: version(p) for p in ("procrastinate", "psycopg", "psycopg-pool")}


def _make_app(dsn):
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="noop")
    async def noop(i: int):
        common.job_started(i)

    return app, noop


async def install(dsn):
    app, _ = _make_app(dsn)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


class _Producer:
    def __init__(self, task):
        self.task = task

    async def enqueue_many(self, start, n):
        await self.task.batch_defer_async(*({"i": k} for k in range(start, start + n)))

    async def enqueue_one(self, i):
        await self.task.defer_async(i=i)


@contextlib.asynccontextmanager
async def producer(dsn):
    app, task = _make_app(dsn)
    async with app.open_async():
        yield _Producer(task)


async def run_worker(dsn, config, stop, ready):
    app, _ = _make_app(dsn)
    async with app.open_async():
        ready()
        wtask = asyncio.create_task(app.run_worker_async(install_signal_handlers=False, **config))
        stop_task = asyncio.create_task(stop.wait())
        await asyncio.wait({wtask, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if not wtask.done():
            wtask.cancel()  # procrastinate treats cancellation as a graceful stop
        with contextlib.suppress(asyncio.CancelledError):
            await wtask
        stop_task.cancel()
