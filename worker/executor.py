"""One claim, start to end: lock due jobs, count the attempts, run the handlers, commit.

Every job's domain writes and its terminal status commit together, in the claiming
transaction; each job runs in its own savepoint (savepoints.py) so one failure does not
sink the others.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ValidationError

from worker import dberrors, metrics
from worker.attempts import FREE_RERUNS, FREE_SNOOZES, Bookkeeper, GivenBack
from worker.errors import FinalFailure, JobError
from worker.finish import Finished, abandon, finish
from worker.job import Job, Outcome
from worker.queries import q
from worker.registry import JobKind
from worker.retry import classify
from worker.savepoints import JobConn, JobSavepoint
from worker.wakeup import SlotWaker

log = structlog.get_logger("worker.executor")

# the claiming transaction's connection, as the pool hands it out
Conn = psycopg.AsyncConnection[dict[str, Any]]
# A debug hook, called with (event, job id, time.monotonic()) as a job passes each step:
# "claimed" (the claim returned it), "recorded" (its attempt row committed), "started" (its
# handler is called), "finished" (its outcome is known), "committed" (the claim's COMMIT
# returned); the worker adds "notified" (job id None) for each NOTIFY naming a kind. It runs
# on the event loop, inline: keep it to appending a timestamp.
EventHook = Callable[[str, int | None, float], None]


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


@dataclass
class Claimed:
    """A claim's jobs, sorted by what their recorded attempts allow."""

    runnable: list[Job] = field(default_factory=list)
    # every allowed attempt is used up: why the job ends, with no attempt of its own
    spent: list[tuple[Job, Outcome]] = field(default_factory=list)
    # the payload does not fit the kind: the job fails without reaching its handler
    refused: list[tuple[Job, FinalFailure]] = field(default_factory=list)


def claimed_jobs(
    kind: JobKind, rows: list[dict[str, Any]], recorded: list[dict[str, Any]]
) -> Claimed:
    """The claim's jobs, in the claim's order, built from the claimed rows and the attempts
    recorded for them (record_attempts)."""
    attempts = {rec["job_id"]: rec for rec in recorded}
    claimed = Claimed()
    for row in rows:
        rec = attempts[row["id"]]
        try:
            (payload, args), refusal = parse_payload(row["payload"], kind.payload_model), None
        except FinalFailure as exc:
            payload, args, refusal = {}, None, exc
        job = Job(
            id=row["id"], kind=row["kind"], subject=row["subject"],
            payload=payload, priority=row["priority"],
            max_attempts=row["max_attempts"], created_at=row["created_at"],
            attempt=rec["attempt"] or rec["prior"], attempt_id=rec["attempt_id"], args=args,
            receipt=row["receipt"],
        )
        if job.attempt_id is None:
            claimed.spent.append((job, spent_outcome(job, rec["last_outcome"])))
        elif refusal is not None:
            claimed.refused.append((job, refusal))
        else:
            claimed.runnable.append(job)
    return claimed


def spent_outcome(job: Job, last_outcome: str | None) -> Outcome:
    """How a job that has used up its attempts ends, by what ended its last one: its input
    changed on every run past the free reruns, or its worker was lost (killed or
    disconnected) before it could record an outcome, each time."""
    if last_outcome == "snoozed":
        return Outcome("failed", "failed", "rate_limited",
                       f"the model server kept answering 429: {FREE_SNOOZES} snoozes and "
                       f"{job.attempt} attempts, none of them let through")
    if last_outcome == "superseded":
        return Outcome("failed", "failed", "input_changed",
                       f"the input changed while every run used it: {FREE_RERUNS} reruns "
                       f"and {job.attempt} attempts, none of them on stable input")
    return Outcome("failed", "failed", "worker_lost",
                   f"all {job.attempt} attempts ended with their worker lost "
                   "(killed or disconnected) before finishing")


class Executor:
    """Runs one claim at a time per call of run_once; a worker's slots share one."""

    def __init__(
        self,
        *,
        pool: AsyncConnectionPool[Conn],
        bookkeeper: Bookkeeper,
        worker_id: str,
        retry_base: float,
        retry_cap: float,
        stopping: asyncio.Event,
        clock: Callable[[], datetime] | None = None,
        on_event: EventHook | None = None,
    ) -> None:
        """`stopping`: once set, jobs of a claim that have not started are given back.
        `clock`: the time claims compare run_at against (None: the server's now()), so a
        test can claim a job scheduled for later without waiting for it."""
        self._pool = pool
        self._bookkeeper = bookkeeper
        self._worker_id = worker_id
        self._retry_base = retry_base
        self._retry_cap = retry_cap
        self._stopping = stopping
        self._clock = clock
        self._on_event = on_event

    async def run_once(self, kind: JobKind, waker: SlotWaker) -> int:
        """Claim up to kind.batch_size due jobs and see them through; returns how many.
        `waker` wakes the kind's other slots: at once when the claim came back full (there
        may be more), later when a job or a retry falls due before the next poll."""
        async with self._pool.connection() as conn:
            rows = await self._claim(conn, kind)
            if not rows:
                await self._wake_when_due(conn, kind, waker)
                return 0
            if len(rows) >= kind.batch_size:
                waker.wake_one()  # another slot of the kind claims while these run
            metrics.in_flight(kind.name, len(rows))
            try:
                await self._run_claimed(conn, kind, rows, waker)
            finally:
                metrics.in_flight(kind.name, -len(rows))
            return len(rows)

    # -- the claim's steps, in order ----------------------------------------------------------

    async def _claim(self, conn: Conn, kind: JobKind) -> list[dict[str, Any]]:
        cur = await conn.execute(
            q("claim_jobs"), {"kind": kind.name, "limit": kind.batch_size, "now": self._now()}
        )
        rows = await cur.fetchall()
        self._emit("claimed", (row["id"] for row in rows))
        return rows

    async def _wake_when_due(self, conn: Conn, kind: JobKind, waker: SlotWaker) -> None:
        """Nothing is due: have a slot wake when the kind's next scheduled job falls due."""
        cur = await conn.execute(q("next_due"), {"kind": kind.name, "now": self._now()})
        due = await cur.fetchone()
        await conn.rollback()
        if due is not None and due["seconds"] is not None:
            waker.wake_in(due["seconds"])

    async def _run_claimed(
        self, conn: Conn, kind: JobKind, rows: list[dict[str, Any]], waker: SlotWaker
    ) -> None:
        claimed = await self._record_attempts(kind, rows)
        try:
            finished = await self._settle(conn, kind, claimed)
            ran, released = await self._run(conn, kind, claimed.runnable)
        except asyncio.CancelledError:
            # a hard stop: nothing of this claim commits, and its attempts are given back
            await abandon(conn, give_back=GivenBack.of(claimed.runnable),
                          bookkeeper=self._bookkeeper)
            raise
        except BaseException:
            # the connection is gone (or worse): nothing commits, and the attempts count,
            # exactly as if this worker had been killed
            await abandon(conn)
            raise
        finished += ran
        await finish(conn, finished, released, self._worker_id)
        self._emit("committed", (f.job_id for f in finished))
        retries = [f.outcome.retry_in for f in finished if f.outcome.status == "pending"]
        if retries:
            waker.wake_in(min(retries))  # a retry due before the next poll need not wait

    async def _record_attempts(self, kind: JobKind, rows: list[dict[str, Any]]) -> Claimed:
        """Count an attempt for every claimed job, committed before any handler runs."""
        job_ids = [row["id"] for row in rows]
        recorded = await self._bookkeeper.record(
            job_ids, [row["receipt"] for row in rows], rows[0]["claim_xid"], self._worker_id)
        self._emit("recorded", job_ids)
        return claimed_jobs(kind, rows, recorded)

    async def _settle(self, conn: Conn, kind: JobKind, claimed: Claimed) -> list[Finished]:
        """The outcomes of the jobs no handler sees: spent and refused ones."""
        outcomes = claimed.spent + [
            (job, classify(refusal, job, self._retry_base, self._retry_cap))
            for job, refusal in claimed.refused
        ]
        for job, outcome in outcomes:
            await self._conclude(conn, kind, job, outcome, time.monotonic())
        return [Finished.of(job, outcome) for job, outcome in outcomes]

    async def _run(
        self, conn: Conn, kind: JobKind, jobs: list[Job]
    ) -> tuple[list[Finished], GivenBack]:
        """Run the handlers: what finished, and the attempts given back because the worker
        is stopping (those jobs stay pending)."""
        if not jobs:
            return [], GivenBack()
        savepoint = JobSavepoint(conn)
        if kind.batch_handler is None:
            return await self._run_each(conn, kind, jobs, savepoint)
        if self._stopping.is_set():
            return [], GivenBack.of(jobs)
        outcomes = await self._run_batch(conn, kind, jobs, savepoint)
        return [Finished.of(job, o) for job, o in zip(jobs, outcomes, strict=True)], GivenBack()

    async def _run_each(
        self, conn: Conn, kind: JobKind, jobs: list[Job], savepoint: JobSavepoint
    ) -> tuple[list[Finished], GivenBack]:
        finished: list[Finished] = []
        for i, job in enumerate(jobs):
            if self._stopping.is_set():
                return finished, GivenBack.of(jobs[i:])  # not started: they stay pending
            finished.append(Finished.of(job, await self._run_job(conn, kind, job, savepoint)))
        return finished, GivenBack()

    async def _run_job(
        self, conn: Conn, kind: JobKind, job: Job, savepoint: JobSavepoint
    ) -> Outcome:
        assert kind.handler is not None
        savepoint.begin()
        started = time.monotonic()
        self._emit("started", (job.id,))
        log.debug("job_started", job_id=job.id, kind=job.kind, attempt=job.attempt)
        try:
            async with asyncio.timeout(kind.timeout):
                result = await kind.handler(JobConn(conn, savepoint), job)
            await savepoint.keep()
            outcome = Outcome.completed(result)
        except Exception as exc:  # a handler failure of any kind ends as a recorded outcome
            if dberrors.connection_lost(conn, exc):
                raise  # the claim is abandoned
            # a deadlock or lock timeout of this job is this job's failure: its savepoint
            # rolls back and the other jobs of the claim go on
            await savepoint.roll_back()
            outcome = classify(exc, job, self._retry_base, self._retry_cap)
        await self._conclude(conn, kind, job, outcome, started)
        return outcome

    async def _run_batch(
        self, conn: Conn, kind: JobKind, jobs: list[Job], savepoint: JobSavepoint
    ) -> list[Outcome]:
        """One call of the kind's batch handler for the whole claim (e.g. one embedding call
        for many rows). It returns a result or an exception per job; if it raises, its writes
        roll back and every job of the batch gets that failure."""
        assert kind.batch_handler is not None
        savepoint.begin()
        started = time.monotonic()
        self._emit("started", (job.id for job in jobs))
        results: dict[int, dict[str, Any] | BaseException | None]
        try:
            async with asyncio.timeout(kind.timeout):
                results = await kind.batch_handler(JobConn(conn, savepoint), jobs)
            await savepoint.keep()
        except Exception as exc:  # one failure for the batch: each job records it
            if dberrors.connection_lost(conn, exc):
                raise
            await savepoint.roll_back()
            results = {job.id: exc for job in jobs}
        outcomes = []
        for job in jobs:
            result = results.get(job.id, JobError("unknown_error", "no result for this job"))
            if isinstance(result, BaseException):
                outcome = classify(result, job, self._retry_base, self._retry_cap)
            else:
                outcome = Outcome.completed(result)
            await self._conclude(conn, kind, job, outcome, started)
            outcomes.append(outcome)
        return outcomes

    async def _conclude(
        self, conn: Conn, kind: JobKind, job: Job, outcome: Outcome, started: float
    ) -> None:
        """A job's outcome is known: the kind marks its domain row if the job ended without
        success, and the outcome is counted and logged."""
        if kind.on_final_failure is not None and outcome.status in ("failed", "skipped"):
            try:
                async with conn.transaction():
                    await kind.on_final_failure(conn, job, outcome)
            except Exception as exc:  # the job's own outcome is still recorded
                if dberrors.connection_lost(conn, exc):
                    raise
                log.exception("on_final_failure_failed", job_id=job.id, kind=job.kind,
                              error=str(exc))
        self._emit("finished", (job.id,))
        seconds = time.monotonic() - started
        metrics.job_finished(job.kind, outcome.attempt_outcome, outcome.error_code, seconds)
        _log_outcome(job, outcome, seconds)

    # -- helpers ------------------------------------------------------------------------------

    def _now(self) -> datetime | None:
        return None if self._clock is None else self._clock()

    def _emit(self, event: str, job_ids: Iterable[int]) -> None:
        if self._on_event is not None:
            at = time.monotonic()
            for job_id in job_ids:
                self._on_event(event, job_id, at)


def _log_outcome(job: Job, outcome: Outcome, seconds: float) -> None:
    duration_ms = round(seconds * 1000, 1)
    if outcome.status == "completed":
        log.info("job_completed", job_id=job.id, kind=job.kind, attempt=job.attempt,
                 outcome=outcome.attempt_outcome, duration_ms=duration_ms)
        return
    log.info(f"job_{outcome.attempt_outcome}", job_id=job.id, kind=job.kind,
             attempt=job.attempt, outcome=outcome.attempt_outcome, duration_ms=duration_ms,
             error_code=outcome.error_code, error_message=outcome.error_message,
             retry_in=round(outcome.retry_in, 3) if outcome.status == "pending" else None)
