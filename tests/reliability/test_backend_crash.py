"""A job that crashes its own database backend, on an embedded server of the test's own: the
server restarts every session and runs crash recovery, and the attempt must still count.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.reliability.support import OwnServer
from tests.support.inproc import running_worker, until
from worker.job import Job
from worker.registry import JobKind, Registry

pytestmark = pytest.mark.chaos


async def _rows(dsn: str, query: bytes, params: Any = None) -> list[dict[str, Any]]:
    """The rows, or none while the server is still restarting."""
    try:
        async with await psycopg.AsyncConnection.connect(
                dsn, autocommit=True, row_factory=dict_row, connect_timeout=2) as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall()
    except psycopg.OperationalError:
        return []


def test_a_job_that_crashes_its_backend_ends_failed_instead_of_looping(
        own_server: OwnServer) -> None:
    """The handler SIGKILLs the backend of its own claim (a stand-in for a segfault or the
    OOM killer): the postmaster restarts every session and replays the WAL. The attempt row
    was committed before the handler ran, so it survives recovery: the job is tried twice
    (max_attempts) and then failed `worker_lost` without a third run."""
    dsn = own_server.admin_dsn
    runs: list[int] = []

    async def crash(conn: psycopg.AsyncConnection[Any], job: Job) -> None:
        runs.append(job.attempt)
        os.kill(conn.info.backend_pid, signal.SIGKILL)
        await conn.execute(b"SELECT 1")  # the claim's session is gone with its backend

    async def main() -> None:
        job = (await _rows(dsn, b"SELECT queue.enqueue('crash', 'c1') AS id"))[0]["id"]
        registry = Registry()
        registry.register(JobKind("crash", crash))
        async with running_worker(dsn, registry, poll_interval=0.2):
            await until(lambda: _rows(dsn, b"SELECT 1 FROM queue.jobs WHERE id = %s "
                                           b"AND status <> 'pending'", (job,)),
                        within=90, interval=0.2, message="the job ended")
        row = (await _rows(dsn, b"SELECT status, error_code, attempts FROM queue.jobs "
                                b"WHERE id = %s", (job,)))[0]
        assert (row["status"], row["error_code"]) == ("failed", "worker_lost"), (row, runs)
        attempts = await _rows(dsn, b"SELECT attempt, outcome FROM queue.attempts "
                                    b"WHERE job_id = %s ORDER BY attempt", (job,))
        assert [(a["attempt"], a["outcome"]) for a in attempts] == [
            (1, "worker_lost"), (2, "worker_lost")]

    asyncio.run(main())
    assert runs == [1, 2]
