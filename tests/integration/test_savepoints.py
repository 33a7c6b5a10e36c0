"""Job savepoints opened on first use (worker/savepoints.py): a handler that never talks to
the server costs no round trip, and every handler that does is isolated exactly as before."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from tests.support.inproc import (
    AConn,
    effect,
    fetch,
    none_pending,
    registry_of,
    running_worker,
    until,
)
from worker.errors import FinalFailure
from worker.job import Job
from worker.registry import JobKind
from worker.savepoints import ClaimConnection


async def _mixed(conn: AConn, job: Job) -> dict[str, Any]:
    """One claim, every way a handler can use (or not use) its connection."""
    how = job.subject
    if how == "idle":
        return {"touched": False}
    if how == "writes":
        await effect(conn, job, job.subject or "")
    elif how == "writes_then_fails":
        await effect(conn, job, job.subject or "")
        raise FinalFailure("bad_input", "wrote, then failed")
    elif how == "nested_then_fails":
        async with conn.transaction():  # psycopg's own savepoint, inside the job's
            await effect(conn, job, job.subject or "")
        raise FinalFailure("bad_input", "nested block committed, then failed")
    elif how == "swallows_sql_error":
        await effect(conn, job, job.subject or "")
        try:
            await conn.execute(b"SELECT 1 / 0")
        except psycopg.errors.DivisionByZero:
            pass  # returns "successfully" with the transaction aborted
    elif how == "pipeline":
        async with conn.pipeline():
            await effect(conn, job, job.subject or "")
    elif how == "idle_fails":
        raise FinalFailure("bad_input", "failed without touching the connection")
    return {"touched": True}


def test_every_handler_shape_is_isolated_in_one_claim(dsn: str) -> None:
    shapes = ["idle", "writes", "writes_then_fails", "nested_then_fails",
              "swallows_sql_error", "pipeline", "idle_fails"]

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            async with conn.transaction():  # one transaction, so one claim takes them all
                for shape in shapes:
                    await conn.execute(
                        b"SELECT queue.enqueue('sp', %s, '{}'::jsonb, p_max_attempts => 1)",
                        (shape,))
        async with running_worker(dsn, registry_of(JobKind("sp", _mixed, batch_size=20))):
            await until(lambda: none_pending(dsn), message="claim finished")
        jobs = {r["subject"]: r for r in await fetch(
            dsn, "SELECT subject, status, error_code, result, attempts FROM queue.jobs "
                 "WHERE kind = 'sp'")}
        effects = sorted(r["note"] for r in await fetch(dsn, "SELECT note FROM test_effects"))
        assert effects == ["pipeline", "writes"]
        assert {s: r["status"] for s, r in jobs.items()} == {
            "idle": "completed", "writes": "completed", "writes_then_fails": "failed",
            "nested_then_fails": "failed", "swallows_sql_error": "failed",
            "pipeline": "completed", "idle_fails": "failed"}
        assert jobs["idle"]["result"] == {"touched": False}
        assert jobs["swallows_sql_error"]["error_code"] is not None
        assert all(r["attempts"] == 1 for r in jobs.values())
        attempts = await fetch(dsn, "SELECT count(*) AS n FROM queue.attempts "
                                    "WHERE finished_at IS NULL")
        assert attempts[0]["n"] == 0

    asyncio.run(main())


def test_no_savepoint_is_sent_for_a_handler_that_never_uses_the_connection(dsn: str) -> None:
    async def main() -> None:
        async with await ClaimConnection.connect(dsn) as conn:
            await conn.execute(b"SELECT 1")  # the claim's transaction is open
            conn.arm_savepoint()
            await conn.close_savepoint(rollback=False)
            # nothing was opened, so there is nothing to roll back to
            with pytest.raises(psycopg.errors.InvalidSavepointSpecification):
                await conn.execute(b"ROLLBACK TO SAVEPOINT worker_job")
            await conn.rollback()

            await conn.execute(b"CREATE TEMP TABLE t (x int)")
            await conn.execute(b"INSERT INTO t VALUES (1)")
            conn.arm_savepoint()
            await conn.execute(b"INSERT INTO t VALUES (2)")  # opens the savepoint first
            await conn.close_savepoint(rollback=True)
            cur = await conn.execute(b"SELECT array_agg(x ORDER BY x) FROM t")
            assert await cur.fetchone() == ([1],)  # the claim's own earlier write stays

            # disarmed (as on an abandoned claim), nothing is opened by the next query
            conn.arm_savepoint()
            conn.disarm()
            await conn.execute(b"SELECT 1")
            with pytest.raises(psycopg.errors.InvalidSavepointSpecification):
                await conn.execute(b"RELEASE SAVEPOINT worker_job")

    asyncio.run(main())


def test_a_claim_that_lost_an_attempt_row_commits_nothing(dsn: str) -> None:
    """The ownership fence travels with the COMMIT: finish_jobs raises (LW001) when an attempt
    is no longer the claim's own, and the COMMIT pipelined behind it rolls everything back."""
    runs: list[int] = []

    async def handler(conn: AConn, job: Job) -> dict[str, Any]:
        await effect(conn, job, job.subject or "")
        runs.append(job.id)
        if len(runs) == 1:
            # someone else closes this attempt while the claim still runs
            await fetch(dsn, "UPDATE queue.attempts SET finished_at = now(), "
                             "outcome = 'released' WHERE id = %s RETURNING id",
                        (job.attempt_id,))
        return {"attempt": job.attempt}

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(b"SELECT queue.enqueue('lost', 's', '{}'::jsonb, "
                               b"p_max_attempts => 3)")
        async with running_worker(dsn, registry_of(JobKind("lost", handler))):
            await until(lambda: none_pending(dsn, "lost"), message="job finished")
        [job] = await fetch(dsn, "SELECT id, status, result FROM queue.jobs "
                                 "WHERE kind = 'lost'")
        # the first claim's write and outcome were rolled back; a later claim finished it
        # (the released attempt does not count, so the next one is numbered 1 again)
        assert job["status"] == "completed"
        effects = await fetch(dsn, "SELECT count(*) AS n FROM test_effects WHERE job_id = %s",
                              (job["id"],))
        assert effects == [{"n": 1}]
        outcomes = await fetch(dsn, "SELECT outcome FROM queue.attempts WHERE job_id = %s "
                                    "ORDER BY id", (job["id"],))
        assert [o["outcome"] for o in outcomes] == ["released", "completed"]
        assert len(runs) == 2

    asyncio.run(main())
