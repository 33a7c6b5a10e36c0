"""One claim, start to end: lock due jobs, count the attempts, run the handlers, commit.

Every job's domain writes and its terminal status commit together, in the claiming
transaction; each job runs in a savepoint so one failure does not sink the others.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import psycopg
import structlog
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ValidationError

from worker import dberrors, metrics
from worker.attempts import Bookkeeper
from worker.errors import FinalFailure, JobError, OwnershipLost
from worker.job import Job, Outcome
from worker.queries import q
from worker.registry import JobKind
from worker.retry import classify
from worker.savepoints import ClaimConnection

log = structlog.get_logger("worker.executor")

Conn = ClaimConnection


def decode_payload(text: str) -> dict[str, Any]:
    """A claimed job's payload as a dict; FinalFailure(bad_payload) when it cannot be one.
    Decoded per job, not by the driver for the whole claim, so a payload that cannot be
    decoded (nested past the parser's recursion limit, a row from before the schema's
    checks) fails alone instead of stopping its kind."""
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise FinalFailure("bad_payload",
                           f"the payload cannot be decoded: {type(exc).__name__}") from None
    if not isinstance(payload, dict):
        raise FinalFailure("bad_payload",
                           f"the payload is a JSON {type(payload).__name__}, not an object")
    return payload


def parse_payload(
    text: str, model: type[BaseModel] | None
) -> tuple[dict[str, Any], BaseModel | None]:
    """The payload, and the kind's typed arguments validated from it; FinalFailure
    (bad_payload) when it cannot be decoded or does not fit the kind's payload_model."""
    payload = decode_payload(text)
    if model is None:
        return payload, None
    try:
        return payload, model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "payload"
        raise FinalFailure(
            "bad_payload", f"the payload does not fit {model.__name__} ({where}: "
            f"{first['msg']}); got {payload!r}"[:300]) from None


class Executor:
    def __init__(
        self,
        pool: AsyncConnectionPool[Conn],
        bookkeeper: Bookkeeper,
        worker_id: str,
        retry_base: float,
        retry_cap: float,
        stopping: Callable[[], bool],
        wake_later: Callable[[str, float], None] = lambda kind, delay: None,
        claimed_full: Callable[[str], None] = lambda kind: None,
    ) -> None:
        self._pool = pool
        self._bookkeeper = bookkeeper
        self._worker_id = worker_id
        self._retry_base = retry_base
        self._retry_cap = retry_cap
        self._stopping = stopping
        self._wake_later = wake_later
        self._claimed_full = claimed_full

    async def run_once(self, kind: JobKind) -> int:
        """Claim up to kind.batch_size due jobs and see them through; returns how many."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                q("claim_jobs"), {"kind": kind.name, "limit": kind.batch_size}
            )
            rows = await cur.fetchall()
            if not rows:
                cur = await conn.execute(q("next_due"), {"kind": kind.name})
                due = await cur.fetchone()
                await conn.rollback()
                if due is not None and due["seconds"] is not None:
                    self._wake_later(kind.name, due["seconds"])
                return 0
            if len(rows) >= kind.batch_size:
                # there may be more: another slot of the kind claims while these run
                self._claimed_full(kind.name)
            await self._run_claimed(conn, kind, rows)
            return len(rows)

    async def _run_claimed(self, conn: Conn, kind: JobKind, rows: list[dict[str, Any]]) -> None:
        by_id = {row["id"]: row for row in rows}
        recorded = await self._bookkeeper.record(
            list(by_id), rows[0]["claim_xid"], self._worker_id
        )
        jobs: list[Job] = []
        lost: list[Job] = []
        refused: list[tuple[Job, FinalFailure]] = []
        finished: list[tuple[int, int | None, int, Outcome]] = []
        order = {job_id: i for i, job_id in enumerate(by_id)}  # the claim's own order
        for rec in sorted(recorded, key=lambda r: order[r["job_id"]]):
            row = by_id[rec["job_id"]]
            try:
                (payload, args), bad = parse_payload(row["payload"], kind.payload_model), None
            except FinalFailure as exc:
                payload, args, bad = {}, None, exc
            job = Job(
                id=row["id"], kind=row["kind"], subject=row["subject"],
                payload=payload, priority=row["priority"],
                max_attempts=row["max_attempts"], created_at=row["created_at"],
                attempt=rec["attempt"] or rec["prior"], attempt_id=rec["attempt_id"],
                args=args,
            )
            if rec["attempt_id"] is None:
                lost.append(job)
            elif bad is not None:
                refused.append((job, bad))
            else:
                jobs.append(job)
        for job in lost:
            # every allowed attempt was started and none finished: each took its worker
            # down (killed, or its connection lost) before it could record an outcome
            outcome = Outcome("failed", "failed", "worker_lost",
                              f"all {job.attempt} attempts ended with their worker lost "
                              "(killed or disconnected) before finishing")
            await self._after(conn, kind, job, outcome, time.monotonic())
            finished.append((job.id, None, job.attempt, outcome))
        for job, refusal in refused:
            outcome = classify(refusal, job, self._retry_base, self._retry_cap)
            await self._after(conn, kind, job, outcome, time.monotonic())
            finished.append((job.id, job.attempt_id, job.attempt, outcome))

        released: list[int] = []
        try:
            if kind.batch_handler is not None and jobs:
                if self._stopping():
                    released = [job.attempt_id for job in jobs if job.attempt_id is not None]
                else:
                    outcomes = await self._execute_batch(conn, kind, jobs)
                    finished.extend((job.id, job.attempt_id, job.attempt, outcome)
                                    for job, outcome in zip(jobs, outcomes, strict=True))
            for job in jobs if kind.batch_handler is None else []:
                if self._stopping() and job.attempt_id is not None:
                    # shutting down: a job of this batch that has not started stays pending
                    released.append(job.attempt_id)
                    continue
                finished.append((job.id, job.attempt_id, job.attempt,
                                 await self._execute(conn, kind, job)))
        except asyncio.CancelledError:
            # a hard stop: nothing of this claim commits, and its attempts are given back
            await self._abandon(conn, jobs, count_attempts=False)
            raise
        except BaseException:
            # the connection is gone (or worse): nothing commits, and the attempts count,
            # exactly as if this worker had been killed
            await self._abandon(conn, jobs, count_attempts=True)
            raise
        await self._finish(conn, finished, released)
        retries = [o.retry_in for *_, o in finished if o.status == "pending"]
        if retries:
            # a retry due before the next poll should not wait for it
            self._wake_later(kind.name, min(retries))

    async def _execute(self, conn: Conn, kind: JobKind, job: Job) -> Outcome:
        assert kind.handler is not None
        started = time.monotonic()
        log.debug("job_started", job_id=job.id, kind=job.kind, attempt=job.attempt)
        # the job's savepoint opens with the handler's first use of the connection
        # (worker/savepoints.py): a handler that writes nothing costs no round trip
        conn.arm_savepoint()
        try:
            async with asyncio.timeout(kind.timeout):
                result = await kind.handler(conn, job)
            await conn.close_savepoint(rollback=False)
            outcome = Outcome.completed(result)
        except Exception as exc:  # a handler failure of any kind ends as a recorded outcome
            if dberrors.connection_lost(conn, exc):
                raise  # the claim is abandoned (_abandon disarms the savepoint)
            # a deadlock or lock timeout of this job is this job's failure: its savepoint
            # rolls back and the other jobs of the claim go on
            await conn.close_savepoint(rollback=True)
            outcome = classify(exc, job, self._retry_base, self._retry_cap)
        await self._after(conn, kind, job, outcome, started)
        return outcome

    async def _execute_batch(self, conn: Conn, kind: JobKind, jobs: list[Job]) -> list[Outcome]:
        """One call of the kind's batch handler for the whole claim (e.g. one embedding call
        for many rows). It returns a result or an exception per job; if it raises, its writes
        roll back and every job of the batch gets that failure."""
        assert kind.batch_handler is not None
        started = time.monotonic()
        results: dict[int, dict[str, Any] | BaseException | None]
        try:
            async with conn.transaction(), asyncio.timeout(kind.timeout):
                results = await kind.batch_handler(conn, jobs)
        except Exception as exc:  # one failure for the batch: each job records it
            if dberrors.connection_lost(conn, exc):
                raise
            results = {job.id: exc for job in jobs}
        outcomes = []
        for job in jobs:
            result = results.get(job.id, JobError("unknown_error", "no result for this job"))
            if isinstance(result, BaseException):
                outcome = classify(result, job, self._retry_base, self._retry_cap)
            else:
                outcome = Outcome.completed(result)
            await self._after(conn, kind, job, outcome, started)
            outcomes.append(outcome)
        return outcomes

    async def _after(
        self, conn: Conn, kind: JobKind, job: Job, outcome: Outcome, started: float
    ) -> None:
        """Let the kind mark its domain row for a job that ended without success, then log."""
        if kind.on_final_failure is not None and outcome.status in ("failed", "skipped"):
            try:
                async with conn.transaction():
                    await kind.on_final_failure(conn, job, outcome)
            except Exception as exc:  # the job's own outcome is still recorded
                if dberrors.connection_lost(conn, exc):
                    raise
                log.exception("on_final_failure_failed", job_id=job.id, kind=job.kind,
                              error=str(exc))
        seconds = time.monotonic() - started
        metrics.job_finished(job.kind, outcome.outcome, seconds)
        if outcome.status == "completed":
            log.info("job_completed", job_id=job.id, kind=job.kind, attempt=job.attempt,
                     outcome=outcome.outcome, duration_ms=round(seconds * 1000, 1))
            return
        log.info(f"job_{outcome.outcome}", job_id=job.id, kind=job.kind, attempt=job.attempt,
                 outcome=outcome.outcome, duration_ms=round(seconds * 1000, 1),
                 error_code=outcome.error_code, error_message=outcome.error_message,
                 retry_in=round(outcome.retry_in, 3) if outcome.status == "pending" else None)

    async def _finish(
        self,
        conn: Conn,
        finished: list[tuple[int, int | None, int, Outcome]],
        released: list[int],
    ) -> None:
        params = {
            "job_ids": [job_id for job_id, _, _, _ in finished],
            "attempt_ids": [attempt_id for _, attempt_id, _, _ in finished],
            "attempts": [attempts for _, _, attempts, _ in finished],
            "statuses": [o.status for *_, o in finished],
            "outcomes": [o.outcome for *_, o in finished],
            "error_codes": [o.error_code for *_, o in finished],
            "error_messages": [o.error_message for *_, o in finished],
            "retry_in": [o.retry_in for *_, o in finished],
            "results": [None if o.result is None else Jsonb(o.result) for *_, o in finished],
            "expected_attempts": sum(1 for _, attempt_id, _, _ in finished
                                     if attempt_id is not None),
            "worker_id": self._worker_id,
        }
        # one round trip: the outcomes, the rerun requests, the released attempts and the
        # COMMIT. finish_jobs raises (SQLSTATE LW001) when the claim lost a job or an
        # attempt, and the COMMIT behind it then rolls the whole claim back
        try:
            async with conn.pipeline():
                await conn.execute(q("finish_jobs"), params)
                await conn.execute(q("apply_reruns"), {"job_ids": params["job_ids"]})
                if released:
                    await conn.execute(q("release_attempts"), {"attempt_ids": released})
                await conn.commit()
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise
        except psycopg.Error as exc:
            await conn.rollback()
            if exc.sqlstate == "LW001":
                raise OwnershipLost(
                    f"{exc.diag.message_primary}; rolled back, nothing written") from None
            raise

    async def _abandon(self, conn: Conn, jobs: list[Job], *, count_attempts: bool) -> None:
        conn.disarm()
        attempt_ids = [job.attempt_id for job in jobs if job.attempt_id is not None]
        try:
            if not count_attempts:
                # before the rollback frees the jobs, so no other worker counts these
                await self._bookkeeper.release(attempt_ids)
        except Exception as exc:  # best effort: the attempts then simply count
            log.warning("release_failed", error=str(exc))
        try:
            await conn.rollback()
        except Exception as exc:  # the connection may already be gone; the pool drops it
            log.warning("rollback_failed", error=str(exc))
