"""`python -m demo`: the queue end to end on the embedded PostgreSQL, no key, no network.

Enqueues jobs through plain SQL as an application would, runs a worker until the queue drains,
then prints what happened. The LLM job kinds join this demo as they land.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.conninfo import make_conninfo

from worker import logs
from worker.config import load_settings
from worker.db import check_pgvector, connect, database_url
from worker.errors import FinalFailure, RetryLater
from worker.job import Job
from worker.loop import Worker
from worker.migrate import migrate
from worker.registry import Registry

ENQUEUE = b"""
SELECT queue.enqueue('demo.square', 'n:' || g, jsonb_build_object('n', g))
FROM generate_series(1, 500) g;
SELECT queue.enqueue('demo.flaky', 'flaky', '{}'::jsonb, p_max_attempts => 3);
SELECT queue.enqueue('demo.broken', 'broken');
"""
SUMMARY = b"SELECT kind, state, jobs FROM queue.stats WHERE kind LIKE 'demo.%' ORDER BY 1, 2"
PENDING = b"SELECT count(*) FROM queue.jobs WHERE status = 'pending' AND kind LIKE 'demo.%'"
DETAIL = b"""
SELECT kind, status, attempts, error_code, result FROM queue.jobs
WHERE kind IN ('demo.flaky', 'demo.broken') OR subject IN ('n:1', 'n:500')
ORDER BY id DESC LIMIT 4
"""
DEMO_DB = "worker_demo"


def demo_registry() -> Registry:
    registry = Registry()

    @registry.kind("demo.square", batch_size=50)
    async def square(conn: AsyncConnection[dict[str, Any]], job: Job) -> dict[str, Any]:
        n = int(job.payload["n"])
        return {"n": n, "square": n * n}

    @registry.kind("demo.flaky")
    async def flaky(conn: AsyncConnection[dict[str, Any]], job: Job) -> dict[str, Any]:
        if job.attempt < 3:
            raise RetryLater("upstream_busy", "the upstream asked us to come back", delay=0.2)
        return {"succeeded_on_attempt": job.attempt}

    @registry.kind("demo.broken")
    async def broken(conn: AsyncConnection[dict[str, Any]], job: Job) -> None:
        raise FinalFailure("bad_input", "this job can never succeed, so it is not retried")

    return registry


async def _run(settings: Any, dsn: str) -> float:
    worker = Worker(settings, dsn, demo_registry())
    task = asyncio.create_task(worker.run())
    await worker.ready.wait()
    started = time.monotonic()
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(ENQUEUE)
        while True:
            row = await (await conn.execute(PENDING)).fetchone()
            if row is not None and row[0] == 0:
                break
            await asyncio.sleep(0.1)
    elapsed = time.monotonic() - started
    worker.stop()
    await task
    return elapsed


def main() -> None:
    settings = load_settings(poll_interval=0.2, log_level="warning")
    logs.configure(settings.log_format, settings.log_level)
    with database_url(settings) as server_dsn:
        dsn = server_dsn
        if settings.database_url is None:
            # a database of its own on the embedded server, fresh on every run
            with connect(server_dsn, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(DEMO_DB)))
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DEMO_DB)))
            dsn = make_conninfo(server_dsn, dbname=DEMO_DB)
        with connect(dsn) as conn:
            check_pgvector(conn)
            migrate(conn)
        print("enqueued 502 jobs through SQL; running the worker until the queue drains…")
        elapsed = asyncio.run(_run(settings, dsn))
        with connect(dsn) as conn:
            summary = conn.execute(SUMMARY).fetchall()
            detail = conn.execute(DETAIL).fetchall()
    print(f"drained in {elapsed:.2f} s\n\njobs by kind and state:")
    for row in summary:
        print(f"  {row['kind']:<12} {row['state']:<10} {row['jobs']}")
    print("\na few jobs:")
    for row in detail:
        print(f"  {row['kind']:<12} {row['status']:<10} attempts={row['attempts']} "
              f"error_code={row['error_code']} result={row['result']}")


if __name__ == "__main__":
    main()
