"""Each job of a claim runs in its own savepoint, so a failing job rolls back its own writes.

A job's savepoint stays established after the job (rolled back to, on failure) and is
released together with the next job's SAVEPOINT, in one pipelined round trip; the claim's
COMMIT ends the last one. So the isolation costs a claim one round trip per job.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from worker.queries import q


class JobSavepoint:
    """The savepoint of the job that runs now on one claim's connection."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn
        self._established = False

    async def open(self) -> None:
        """Before a job: its savepoint, in place of the previous job's."""
        if not self._established:
            await self._conn.execute(q("job_savepoint"))
            self._established = True
            return
        async with self._conn.pipeline():
            await self._conn.execute(q("job_savepoint_release"))
            await self._conn.execute(q("job_savepoint"))

    async def keep(self) -> None:
        """The job succeeded: its writes stay. A handler that caught a database error and
        returned left the transaction aborted: the server refuses the RELEASE sent then
        (InFailedSqlTransaction), and the job fails and is rolled back like any other."""
        if self._conn.info.transaction_status == TransactionStatus.INERROR:
            await self._conn.execute(q("job_savepoint_release"))

    async def roll_back(self) -> None:
        """The job failed: undo its writes, whatever state its handler left."""
        await self._conn.execute(q("job_savepoint_rollback"))
