"""Each job of a claim runs in its own savepoint, so a failing job rolls back its own writes.

The handler gets the claim's connection wrapped (`JobConn`): the wrapper opens the job's
savepoint right before the handler's first statement, nested transaction or pipeline, and
has no commit, rollback or close. A job's savepoint stays established after the job (rolled
back to, on failure) and is released by the statement that opens the next job's, in the
same round trip; the claim's COMMIT ends the last one. So a job that uses the database pays
one round trip for its isolation, and one that never does (a handler that only calls a
model and returns) pays none.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg import AsyncCursor, AsyncPipeline, AsyncTransaction
from psycopg.abc import Params, QueryNoTemplate
from psycopg.pq import TransactionStatus

from worker.queries import q


class JobSavepoint:
    """The savepoint of the job that runs now on one claim's connection."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn
        self._established = False  # a job savepoint exists in the claiming transaction
        self._opened = False  # the current job's savepoint was sent

    def begin(self) -> None:
        """A job starts: its savepoint is opened by its first use of the connection."""
        self._opened = False

    async def open(self) -> None:
        """The job's savepoint, in place of the previous job's; once per job."""
        if self._opened:
            return
        # flagged first: from here on the savepoint may exist, and a failure rolls back to it
        self._opened = True
        await self._send("job_savepoint_next" if self._established else "job_savepoint")
        self._established = True

    async def keep(self) -> None:
        """The job succeeded: its writes stay. A handler that caught a database error and
        returned left the transaction aborted: the server refuses the RELEASE sent then
        (InFailedSqlTransaction), and the job fails and is rolled back like any other."""
        if self._opened and self._conn.info.transaction_status == TransactionStatus.INERROR:
            await self._send("job_savepoint_release")

    async def roll_back(self) -> None:
        """The job failed: undo its writes, whatever state its handler left."""
        if self._opened:
            await self._send("job_savepoint_rollback")

    async def _send(self, name: str) -> None:
        # not prepared: a savepoint command has no plan to keep, and a statement sent
        # without parameters and unprepared goes as one simple query, two statements
        # included (job_savepoint_next)
        await self._conn.execute(q(name), prepare=False)


class JobConn:
    """The claim's connection as a handler sees it (worker.registry.JobConnection): every
    exchange with the server opens the job's savepoint first; commit, rollback and close
    are not there, because the claim's end belongs to the executor."""

    def __init__(self, conn: psycopg.AsyncConnection[dict[str, Any]],
                 savepoint: JobSavepoint) -> None:
        self._conn = conn
        self._savepoint = savepoint

    @property
    def info(self) -> psycopg.ConnectionInfo:
        return self._conn.info

    @property
    def closed(self) -> bool:
        return self._conn.closed

    @property
    def broken(self) -> bool:
        return self._conn.broken

    async def execute(
        self, query: QueryNoTemplate, params: Params | None = None, *,
        prepare: bool | None = None, binary: bool = False,
    ) -> AsyncCursor[dict[str, Any]]:
        await self._savepoint.open()
        return await self._conn.execute(query, params, prepare=prepare, binary=binary)

    @contextlib.asynccontextmanager
    async def transaction(
        self, savepoint_name: str | None = None, force_rollback: bool = False
    ) -> AsyncIterator[AsyncTransaction]:
        await self._savepoint.open()
        async with self._conn.transaction(savepoint_name, force_rollback) as tx:
            yield tx

    @contextlib.asynccontextmanager
    async def pipeline(self) -> AsyncIterator[AsyncPipeline]:
        await self._savepoint.open()
        async with self._conn.pipeline() as pipeline:
            yield pipeline
