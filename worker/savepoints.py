"""Each job of a claim runs in its own savepoint, so a failing job rolls back its own writes.

A job's savepoint stays established after the job (rolled back to, on failure) and is
released by the statement that opens the next job's, in the same round trip; the claim's
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
        await self._send("job_savepoint_next" if self._established else "job_savepoint")
        self._established = True

    async def keep(self) -> None:
        """The job succeeded: its writes stay. A handler that caught a database error and
        returned left the transaction aborted: the server refuses the RELEASE sent then
        (InFailedSqlTransaction), and the job fails and is rolled back like any other."""
        if self._conn.info.transaction_status == TransactionStatus.INERROR:
            await self._send("job_savepoint_release")

    async def roll_back(self) -> None:
        """The job failed: undo its writes, whatever state its handler left."""
        await self._send("job_savepoint_rollback")

    async def _send(self, name: str) -> None:
        # not prepared: a savepoint command has no plan to keep, and a statement sent
        # without parameters and unprepared goes as one simple query, two statements
        # included (job_savepoint_next)
        await self._conn.execute(q(name), prepare=False)
