"""The end of a claim: every job's outcome written, fenced on ownership, and the COMMIT;
or, when the claim cannot finish, its rollback.

One round trip carries the outcomes, the rerun requests, the released attempts and the
COMMIT; if the claim lost a job or an attempt meanwhile, nothing of it is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from psycopg.types.json import Jsonb

from worker.attempts import Bookkeeper, GivenBack
from worker.errors import OwnershipLost
from worker.job import Job, Outcome
from worker.queries import q

log = structlog.get_logger("worker.finish")


@dataclass(frozen=True, slots=True)
class Finished:
    """One job's line in finish_jobs: its outcome and the attempt row it closes."""

    job_id: int
    # None when the job had no attempt left to start (it ends worker_lost)
    attempt_id: int | None
    attempts: int
    outcome: Outcome
    receipt: str

    @classmethod
    def of(cls, job: Job, outcome: Outcome) -> Finished:
        return cls(job.id, job.attempt_id, job.attempt, outcome, job.receipt)


def _params(finished: list[Finished], worker_id: str) -> dict[str, Any]:
    outcomes = [f.outcome for f in finished]
    return {
        "job_ids": [f.job_id for f in finished],
        "receipts": [f.receipt for f in finished],
        "attempt_ids": [f.attempt_id for f in finished],
        "attempts": [f.attempts for f in finished],
        "statuses": [o.status for o in outcomes],
        "outcomes": [o.attempt_outcome for o in outcomes],
        "error_codes": [o.error_code for o in outcomes],
        "error_messages": [o.error_message for o in outcomes],
        "retry_in": [o.retry_in for o in outcomes],
        "results": [None if o.result is None else Jsonb(o.result) for o in outcomes],
        "worker_id": worker_id,
    }


async def finish(
    conn: psycopg.AsyncConnection[Any],
    finished: list[Finished],
    released: GivenBack,
    worker_id: str,
) -> None:
    """Write the outcomes and commit; OwnershipLost (everything rolled back) when
    finish_jobs finds the claim no longer owns a job or an attempt (SQLSTATE LW001)."""
    params = _params(finished, worker_id)
    try:
        async with conn.pipeline():
            await conn.execute(q("finish_jobs"), params)
            await conn.execute(q("apply_reruns"), {"job_ids": params["job_ids"]})
            if released.attempt_ids:
                await conn.execute(q("release_attempts"), released.params())
            await conn.commit()
    except (psycopg.OperationalError, psycopg.InterfaceError):
        raise
    except psycopg.Error as exc:
        await conn.rollback()
        if exc.sqlstate == "LW001":
            raise OwnershipLost(
                f"{exc.diag.message_primary}; rolled back, nothing written") from None
        raise


async def abandon(
    conn: psycopg.AsyncConnection[Any], *, give_back: GivenBack | None = None,
    bookkeeper: Bookkeeper | None = None,
) -> None:
    """Roll the claim back. Its attempts count, as if the worker had died, unless they are
    given back: `give_back` closed as released by `bookkeeper` first."""
    if give_back is not None and bookkeeper is not None:
        try:
            # before the rollback frees the jobs, so no other worker counts these
            await bookkeeper.release(give_back)
        except Exception as exc:  # best effort: the attempts then simply count
            log.warning("release_failed", error=str(exc))
    try:
        await conn.rollback()
    except Exception as exc:  # the connection may already be gone; the pool drops it
        log.warning("rollback_failed", error=str(exc))
