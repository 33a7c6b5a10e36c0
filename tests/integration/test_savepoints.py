"""A savepoint per job (worker/savepoints.py): a failing job rolls back its own writes and
nothing else, whatever its handler did with the connection, and the claim goes on."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from tests.support.inproc import effect, fetch, none_pending, registry_of, running_worker, until
from worker.errors import FinalFailure
from worker.job import Job
from worker.registry import JobConnection, JobKind
from worker.savepoints import JobSavepoint


async def _mixed(conn: JobConnection, job: Job) -> dict[str, Any]:
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


def test_a_job_savepoint_keeps_or_undoes_one_job_and_never_nests(dsn: str) -> None:
    async def values(conn: psycopg.AsyncConnection[Any]) -> list[int]:
        cur = await conn.execute(b"SELECT coalesce(array_agg(x ORDER BY x), '{}') FROM t")
        row = await cur.fetchone()
        assert row is not None
        return list(row[0])

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await conn.execute(b"CREATE TEMP TABLE t (x int)")
            await conn.execute(b"INSERT INTO t VALUES (1)")  # the claim's own write
            savepoint = JobSavepoint(conn)
            savepoint.begin()
            await savepoint.open()
            await conn.execute(b"INSERT INTO t VALUES (2)")
            await savepoint.keep()
            savepoint.begin()
            await savepoint.open()
            await conn.execute(b"INSERT INTO t VALUES (3)")
            await savepoint.roll_back()
            assert await values(conn) == [1, 2]

            # a handler that caught an error and went on: keep refuses, roll_back recovers
            savepoint.begin()
            await savepoint.open()
            await conn.execute(b"INSERT INTO t VALUES (4)")
            with pytest.raises(psycopg.errors.DivisionByZero):
                await conn.execute(b"SELECT 1 / 0")
            with pytest.raises(psycopg.errors.InFailedSqlTransaction):
                await savepoint.keep()
            await savepoint.roll_back()
            assert await values(conn) == [1, 2]

            # each open released the previous job's savepoint: one level is left, and the
            # second release finds none
            savepoint.begin()
            await savepoint.open()
            await conn.execute(b"RELEASE SAVEPOINT worker_job")
            with pytest.raises(psycopg.errors.InvalidSavepointSpecification):
                await conn.execute(b"RELEASE SAVEPOINT worker_job")
            await conn.rollback()

    asyncio.run(main())


def test_a_job_that_waits_past_lock_timeout_fails_alone(dsn: str) -> None:
    """A row lock held by the application costs the job that waits for it `lock_timeout`
    and a retry (db_conflict); its own write is undone and its claim-mates complete."""

    async def handler(conn: JobConnection, job: Job) -> dict[str, Any]:
        await effect(conn, job, job.subject or "")
        if job.subject == "blocked":
            await conn.execute(b"SELECT pg_advisory_xact_lock(4242)")
        return {}

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as app:
            await app.execute(b"SELECT pg_advisory_lock(4242)")
            async with app.transaction():
                for subject in ("before", "blocked", "after"):
                    await app.execute(b"SELECT queue.enqueue('lk', %s)", (subject,))
            kind = JobKind("lk", handler, batch_size=10)
            async with running_worker(dsn, registry_of(kind), lock_timeout_ms=200,
                                      retry_base=30, retry_cap=30):
                await until(lambda: fetch(dsn, "SELECT 1 FROM queue.jobs WHERE kind = 'lk' "
                                               "AND status = 'completed' HAVING count(*) = 2"),
                            message="the two free jobs completed")
        jobs = {r["subject"]: r for r in await fetch(
            dsn, "SELECT subject, status, error_code, attempts FROM queue.jobs "
                 "WHERE kind = 'lk'")}
        assert jobs["blocked"]["status"] == "pending"
        assert (jobs["blocked"]["error_code"], jobs["blocked"]["attempts"]) == ("db_conflict", 1)
        effects = sorted(r["note"] for r in await fetch(dsn, "SELECT note FROM test_effects"))
        assert effects == ["after", "before"]

    asyncio.run(main())


def test_a_claim_that_lost_an_attempt_row_commits_nothing(dsn: str) -> None:
    """The ownership fence travels with the COMMIT: finish_jobs raises (LW001) when an attempt
    is no longer the claim's own, and the COMMIT pipelined behind it rolls everything back."""
    runs: list[int] = []

    async def handler(conn: JobConnection, job: Job) -> dict[str, Any]:
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


def test_a_job_that_never_uses_the_connection_sends_no_savepoint(dsn: str) -> None:
    """The savepoint is opened by the handler's first statement through its JobConn: a job
    that sends none costs no round trip (were one sent, rolling back to it and releasing
    it would behave otherwise), and the handler's connection cannot end the claim."""
    from worker.savepoints import JobConn

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            savepoint = JobSavepoint(conn)
            await conn.execute(b"SELECT 1")  # the claim's transaction is open
            savepoint.begin()
            await savepoint.roll_back()  # nothing to undo, and nothing sent
            with pytest.raises(psycopg.errors.InvalidSavepointSpecification):
                await conn.execute(b"RELEASE SAVEPOINT worker_job")
            await conn.rollback()

            job = JobConn(conn, savepoint)  # type: ignore[arg-type]
            savepoint.begin()
            await job.execute(b"SELECT 1")  # the first statement opens it
            await conn.execute(b"RELEASE SAVEPOINT worker_job")
            assert not any(hasattr(job, name) for name in ("commit", "rollback", "close"))
            await conn.rollback()

    asyncio.run(main())
