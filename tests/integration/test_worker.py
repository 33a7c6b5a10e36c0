"""The worker loop in process against a real server: wake-ups, retries, rollbacks, fencing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from tests.support.inproc import (
    AConn,
    aconnect,
    effect,
    fetch,
    none_pending,
    registry_of,
    running_worker,
    until,
)
from worker.attempts import Bookkeeper
from worker.errors import FinalFailure, RetryLater
from worker.executor import Executor
from worker.job import Job
from worker.registry import JobConnection, JobKind
from worker.wakeup import SlotWaker


async def _enqueue(dsn: str, kind: str, subject: str | None = None,
                   payload: str = "{}", max_attempts: int = 2) -> int:
    rows = await fetch(dsn, "SELECT queue.enqueue(%s, %s, %s::jsonb, p_max_attempts => %s) AS id",
                       (kind, subject, payload, max_attempts))
    return int(rows[0]["id"])


async def _job(dsn: str, job_id: int) -> dict[str, Any]:
    return (await fetch(dsn, "SELECT * FROM queue.job_states WHERE id = %s", (job_id,)))[0]


async def _status(dsn: str, job_id: int, *statuses: str) -> bool:
    return (await _job(dsn, job_id))["status"] in statuses


async def _effects(dsn: str, job_id: int) -> list[dict[str, Any]]:
    return await fetch(dsn, "SELECT * FROM test_effects WHERE job_id = %s ORDER BY id",
                       (job_id,))


async def _ok(conn: JobConnection, job: Job) -> dict[str, Any]:
    await effect(conn, job)
    return {"done": job.id}


def test_notify_wakes_an_idle_worker(dsn: str) -> None:
    async def main() -> None:
        # the poll would take a minute: only the NOTIFY can bring the job in time
        async with running_worker(dsn, registry_of(JobKind("k", _ok)), poll_interval=60):
            job = await _enqueue(dsn, "k", "s")
            await until(lambda: _status(dsn, job, "completed"), within=10,
                        message="job completed")
        row = await _job(dsn, job)
        assert row["result"] == {"done": job} and row["attempts"] == 1
        assert len(await _effects(dsn, job)) == 1

    asyncio.run(main())


def test_a_notification_wakes_one_slot_and_a_full_claim_wakes_the_next(dsn: str) -> None:
    """One NOTIFY for a burst wakes one slot; its claim comes back full, so it wakes another
    slot before running its jobs, and the burst fans out over all three slots at once."""
    running: set[int] = set()  # the claims (their backends) whose job is running now
    fanned_out = asyncio.Event()
    go_on = asyncio.Event()

    async def held(conn: JobConnection, job: Job) -> dict[str, Any]:
        running.add(conn.info.backend_pid)
        if len(running) == 3:
            fanned_out.set()
        await go_on.wait()
        running.discard(conn.info.backend_pid)
        return {}

    async def main() -> None:
        kind = JobKind("fan", held, batch_size=2, concurrency=3)
        # the poll would take a minute: only notifications and the cascade can start them
        async with running_worker(dsn, registry_of(kind), poll_interval=60):
            async with await aconnect(dsn) as conn, conn.transaction():
                for i in range(6):
                    await conn.execute(b"SELECT queue.enqueue('fan', %s)", (f"burst{i}",))
            # three claims of two, each holding its first job: all three slots took a claim
            await asyncio.wait_for(fanned_out.wait(), 10)
            go_on.set()
            await until(lambda: none_pending(dsn, "fan"), within=10, message="burst done")
        rows = await fetch(dsn, "SELECT count(*) AS n FROM queue.jobs "
                                "WHERE kind = 'fan' AND status = 'completed'")
        assert rows == [{"n": 6}]

    asyncio.run(main())


def test_a_job_inserted_without_notify_is_picked_up_by_polling(dsn: str) -> None:
    async def main() -> None:
        async with running_worker(dsn, registry_of(JobKind("k", _ok)), poll_interval=0.3):
            async with await aconnect(dsn) as conn:
                # replica mode skips triggers, so no NOTIFY is sent
                await conn.execute(b"SET session_replication_role = replica")
                cur = await conn.execute(b"INSERT INTO queue.jobs (kind) VALUES ('k') RETURNING id")
                job = (await cur.fetchone())["id"]  # type: ignore[index]
            await until(lambda: _status(dsn, job, "completed"), within=10,
                        message="polled job completed")

    asyncio.run(main())


def test_a_terminated_listen_connection_is_reestablished(dsn: str) -> None:
    async def main() -> None:
        async with running_worker(dsn, registry_of(JobKind("k", _ok)), poll_interval=60) as w:
            assert w.listener is not None
            old_pid = w.listener.backend_pid
            await fetch(dsn, "SELECT pg_terminate_backend(%s)", (old_pid,))
            await until(lambda: _changed(w, old_pid), within=10, message="re-LISTEN")
            job = await _enqueue(dsn, "k", "after-reconnect")
            await until(lambda: _status(dsn, job, "completed"), within=10,
                        message="job after reconnect completed")

    async def _changed(w: Any, old_pid: int | None) -> bool:
        return bool(w.listener.listening.is_set() and w.listener.backend_pid not in
                    (None, old_pid))

    asyncio.run(main())


def test_a_failing_handler_leaves_no_domain_change_and_is_retried(dsn: str) -> None:
    async def fails(conn: JobConnection, job: Job) -> None:
        await effect(conn, job, "written before the failure")
        raise RuntimeError("handler broke")

    async def main() -> None:
        async with running_worker(dsn, registry_of(JobKind("k", fails))):
            job = await _enqueue(dsn, "k", "s", max_attempts=2)
            await until(lambda: _status(dsn, job, "failed"), message="job failed")
        row = await _job(dsn, job)
        assert row["attempts"] == 2
        assert row["error_code"] == "unknown_error"
        assert "handler broke" in row["error_message"]
        assert row["completed_at"] is not None
        assert await _effects(dsn, job) == []
        attempts = await fetch(dsn, "SELECT attempt, outcome FROM queue.attempts "
                                    "WHERE job_id = %s ORDER BY attempt", (job,))
        assert attempts == [{"attempt": 1, "outcome": "retry"},
                            {"attempt": 2, "outcome": "failed"}]

    asyncio.run(main())


def test_final_failures_are_not_retried_and_retry_after_is_honoured(dsn: str) -> None:
    async def final(conn: JobConnection, job: Job) -> None:
        raise FinalFailure("guard_fail", "the model picked 3, the key is 2")

    async def later(conn: JobConnection, job: Job) -> None:
        raise RetryLater("rate_limited", "slow down", delay=3600)

    async def main() -> None:
        registry = registry_of(JobKind("final", final), JobKind("later", later))
        async with running_worker(dsn, registry):
            a = await _enqueue(dsn, "final", "s", max_attempts=5)
            b = await _enqueue(dsn, "later", "s", max_attempts=5)
            await until(lambda: _status(dsn, a, "failed"), message="final failure")
            await until(lambda: _attempts(dsn, b, 1), message="retry recorded")
        row_a, row_b = await _job(dsn, a), await _job(dsn, b)
        assert row_a["attempts"] == 1 and row_a["error_code"] == "guard_fail"
        assert row_b["status"] == "pending" and row_b["error_code"] == "rate_limited"
        waited = (row_b["run_at"] - row_b["updated_at"]).total_seconds()
        assert 3590 < waited < 3610

    async def _attempts(dsn: str, job: int, n: int) -> bool:
        return bool((await _job(dsn, job))["attempts"] == n)

    asyncio.run(main())


def test_one_failure_in_a_batch_does_not_sink_the_others(dsn: str) -> None:
    async def mixed(conn: JobConnection, job: Job) -> dict[str, Any]:
        await effect(conn, job)
        if job.payload.get("bad"):
            raise FinalFailure("bad_input", "cannot")
        return {}

    async def main() -> None:
        async with await aconnect(dsn) as conn:
            # all in one transaction, so the batch claim sees them together
            async with conn.transaction():
                for i in range(5):
                    await conn.execute(
                        b"SELECT queue.enqueue('k', %s, %s::jsonb)",
                        (f"s{i}", '{"bad": true}' if i == 2 else "{}"))
        async with running_worker(dsn, registry_of(JobKind("k", mixed, batch_size=10))):
            await until(lambda: none_pending(dsn), message="batch finished")
        rows = await fetch(dsn, "SELECT subject, status FROM queue.jobs ORDER BY subject")
        assert [r["status"] for r in rows] == ["completed", "completed", "failed",
                                               "completed", "completed"]
        effects = await fetch(dsn, "SELECT j.subject FROM test_effects e "
                                   "JOIN queue.jobs j ON j.id = e.job_id ORDER BY 1")
        assert [r["subject"] for r in effects] == ["s0", "s1", "s3", "s4"]

    asyncio.run(main())


def test_a_handler_past_its_timeout_is_stopped_and_retried(dsn: str) -> None:
    async def slow(conn: JobConnection, job: Job) -> None:
        await effect(conn, job)
        await asyncio.sleep(30)

    async def main() -> None:
        async with running_worker(dsn, registry_of(JobKind("k", slow, timeout=0.3))):
            job = await _enqueue(dsn, "k", "s", max_attempts=2)
            await until(lambda: _status(dsn, job, "failed"), message="timed out twice")
        row = await _job(dsn, job)
        assert row["error_code"] == "timeout" and row["attempts"] == 2
        assert await _effects(dsn, job) == []

    asyncio.run(main())


def test_a_completion_that_lost_its_claim_writes_nothing(dsn: str) -> None:
    """The claiming session is killed mid-job: its writes vanish, another claim finishes."""
    started: asyncio.Queue[int] = asyncio.Queue()
    go_on = asyncio.Event()

    async def handler(conn: JobConnection, job: Job) -> dict[str, Any]:
        if job.attempt == 1:
            await started.put(conn.info.backend_pid)
            await go_on.wait()
        await effect(conn, job, f"attempt {job.attempt}")
        return {"attempt": job.attempt}

    async def main() -> None:
        async with running_worker(dsn, registry_of(JobKind("k", handler))):
            job = await _enqueue(dsn, "k", "s", max_attempts=3)
            pid = await asyncio.wait_for(started.get(), 10)
            await fetch(dsn, "SELECT pg_terminate_backend(%s)", (pid,))
            go_on.set()  # the first attempt now tries to write and finish on a dead session
            await until(lambda: _status(dsn, job, "completed"), message="completed by retry")
        effects = await _effects(dsn, job)
        assert [e["note"] for e in effects] == ["attempt 2"]
        row = await _job(dsn, job)
        assert row["attempts"] == 2 and row["result"] == {"attempt": 2}
        outcomes = await fetch(dsn, "SELECT attempt, outcome FROM queue.attempts "
                                    "WHERE job_id = %s ORDER BY attempt", (job,))
        assert outcomes == [{"attempt": 1, "outcome": "worker_lost"},
                            {"attempt": 2, "outcome": "completed"}]

    asyncio.run(main())


def test_the_server_ends_a_claim_left_idle_by_a_hung_worker(dsn: str) -> None:
    """idle_in_transaction_session_timeout is the backstop for a wedged handler, one that
    blocks the event loop so that even the job's own timeout cannot stop it."""

    async def handler(conn: JobConnection, job: Job) -> None:
        if job.attempt == 1:
            time.sleep(3)  # noqa: ASYNC251 - a wedged handler holds the claim idle
        await effect(conn, job, f"attempt {job.attempt}")

    async def main() -> None:
        kind = JobKind("k", handler, concurrency=2, timeout=0.4)
        async with running_worker(dsn, registry_of(kind), idle_in_tx_timeout_ms=500):
            job = await _enqueue(dsn, "k", "s", max_attempts=3)
            await until(lambda: _status(dsn, job, "completed"), message="completed after kill")
        assert [e["note"] for e in await _effects(dsn, job)] == ["attempt 2"]

    asyncio.run(main())


def test_a_job_of_a_kind_no_live_worker_runs_fails_with_a_clear_code(dsn: str) -> None:
    async def main() -> None:
        async with await aconnect(dsn) as conn:
            for kind, age in (("no.such.kind", "1 hour"), ("no.such.kind", "1 second"),
                              ("k", "1 hour")):
                await conn.execute(
                    b"INSERT INTO queue.jobs (kind, created_at, run_at) "
                    b"VALUES (%s, now() - %s::interval, now() + interval '1 hour')",
                    (kind, age))
        async with running_worker(dsn, registry_of(JobKind("k", _ok)), unknown_kind_grace=60,
                                  heartbeat_interval=0.1) as w:
            rows = await fetch(dsn, "SELECT kinds FROM queue.workers WHERE worker_id = %s",
                               (w.settings.worker_id,))
            assert rows == [{"kinds": ["k"]}]
            # a fleet sweeps only once it has been up for the grace itself
            await fetch(dsn, "UPDATE queue.workers SET started_at = now() - interval '1 hour' "
                             "RETURNING 1")
            await until(lambda: fetch(dsn, "SELECT 1 FROM queue.jobs "
                                           "WHERE error_code = 'unknown_kind'"),
                        message="sweep")
        jobs = await fetch(dsn, "SELECT kind, status, error_code, error_message, completed_at "
                                "IS NOT NULL AS done FROM queue.jobs ORDER BY id")
        assert [(j["kind"], j["status"], j["error_code"]) for j in jobs] == [
            ("no.such.kind", "failed", "unknown_kind"),
            ("no.such.kind", "pending", None),   # younger than the grace period
            ("k", "pending", None),              # a kind this worker runs (not due yet)
        ]
        assert "no live worker runs job kind 'no.such.kind'" in jobs[0]["error_message"]
        assert jobs[0]["done"] is True
        # a stopped worker leaves the registry
        assert await fetch(dsn, "SELECT * FROM queue.workers") == []

    asyncio.run(main())


def test_a_payload_nested_too_deep_to_decode_fails_alone(dsn: str) -> None:
    """Valid jsonb that the worker's JSON parser cannot decode (nested past its recursion
    limit) ends that job `bad_payload`; the rest of its claim and its kind go on."""
    deep = '{"a": ' + "[" * 3000 + "]" * 3000 + "}"

    async def main() -> None:
        async with await aconnect(dsn) as conn:
            # a row from before the schema bounded payloads
            await conn.execute(b"ALTER TABLE queue.jobs DROP CONSTRAINT IF EXISTS payload_bounded")
            await conn.execute(b"INSERT INTO queue.jobs (kind, subject, payload) "
                               b"VALUES ('k', 'deep', %s::jsonb)", (deep,))
        good = [await _enqueue(dsn, "k", f"s{i}") for i in range(3)]
        async with running_worker(dsn, registry_of(JobKind("k", _ok, batch_size=10))):
            await until(lambda: none_pending(dsn), within=10, message="all jobs finished")
        rows = await fetch(dsn, "SELECT subject, status, error_code, error_message "
                                "FROM queue.jobs ORDER BY id")
        assert [(r["subject"], r["status"], r["error_code"]) for r in rows] == [
            ("deep", "failed", "bad_payload"), *[(f"s{i}", "completed", None) for i in range(3)]]
        assert "cannot be decoded" in rows[0]["error_message"]
        assert [len(await _effects(dsn, job)) for job in good] == [1, 1, 1]

    asyncio.run(main())


def test_a_job_scheduled_for_later_runs_when_due_not_at_the_next_poll(dsn: str) -> None:
    """Its NOTIFY fired at insert, when it was not due: the empty claim that woke looks up
    when it falls due and wakes a slot then. The poll is a minute away."""

    async def main() -> None:
        async with running_worker(dsn, registry_of(JobKind("k", _ok)), poll_interval=60):
            rows = await fetch(dsn, "SELECT queue.enqueue('k', 'later', '{}', "
                                    "p_run_at => now() + interval '1.5 seconds') AS id")
            job = int(rows[0]["id"])
            await until(lambda: _status(dsn, job, "completed"), within=15,
                        message="the scheduled job ran")
        row = await _job(dsn, job)
        assert row["started_at"] >= row["run_at"]

    asyncio.run(main())


def test_a_claim_on_a_later_clock_takes_a_job_scheduled_for_then(dsn: str) -> None:
    """claim_jobs compares run_at with the executor's clock when it has one: a job due in an
    hour is claimed by a claim whose clock runs two hours ahead, without waiting for it."""

    async def main() -> None:
        rows = await fetch(dsn, "SELECT queue.enqueue('k', 'later', '{}', "
                                "p_run_at => now() + interval '1 hour') AS id")
        job = int(rows[0]["id"])
        kind, waker = JobKind("k", _ok), SlotWaker(poll_interval=60)
        bookkeeper = Bookkeeper(dsn, "test:attempts")
        pool = AsyncConnectionPool(dsn, connection_class=AConn, min_size=1, max_size=1,
                                   kwargs={"row_factory": dict_row}, open=False)
        two_hours_on = datetime.now(UTC) + timedelta(hours=2)

        def executor(clock: Callable[[], datetime] | None) -> Executor:
            return Executor(pool=pool, bookkeeper=bookkeeper, worker_id="test-clock",
                            retry_base=0.05, retry_cap=0.2, stopping=asyncio.Event(),
                            clock=clock)

        async with pool:
            assert await executor(None).run_once(kind, waker) == 0  # the server's now()
            assert await executor(lambda: two_hours_on).run_once(kind, waker) == 1
        await bookkeeper.close()
        row = await _job(dsn, job)
        assert row["status"] == "completed" and row["result"] == {"done": job}
        assert row["started_at"] < row["run_at"]

    asyncio.run(main())


def test_the_debug_hook_sees_a_job_through_every_step_in_order(dsn: str) -> None:
    events: list[tuple[str, int | None, float]] = []

    async def main() -> None:
        async with running_worker(dsn, registry_of(JobKind("k", _ok)), poll_interval=60,
                                  on_event=lambda *event: events.append(event)):
            job = await _enqueue(dsn, "k", "traced")
            await until(lambda: _status(dsn, job, "completed"), within=10,
                        message="job completed")
            await until(lambda: _committed(job), within=10, message="commit seen")
        steps = [name for name, job_id, _ in events if job_id in (job, None)]
        assert steps == ["notified", "claimed", "recorded", "started", "finished", "committed"]
        stamps = [at for _, job_id, at in events if job_id in (job, None)]
        assert stamps == sorted(stamps)

    async def _committed(job: int) -> bool:
        return ("committed", job) in [(name, job_id) for name, job_id, _ in events]

    asyncio.run(main())


def test_input_that_changes_on_every_run_ends_after_its_free_reruns_and_attempts(
        dsn: str) -> None:
    """A job whose input reads as edited on every run (a server hashing other bytes than
    the worker, a row an app rewrites in a loop) reran at once, forever, without using an
    attempt. The first few reruns are free; after them each one counts."""
    from worker.attempts import FREE_RERUNS
    from worker.errors import InputChanged

    runs = 0

    async def changed(conn: Any, job: Any) -> None:
        nonlocal runs
        runs += 1
        raise InputChanged("input_changed", "the row was edited while it was processed")

    async def main() -> None:
        async with running_worker(dsn, registry_of(JobKind("k", changed))):
            rows = await fetch(dsn, "SELECT queue.enqueue('k', 'edited', '{}', "
                                    "p_max_attempts => 2) AS id")
            job = int(rows[0]["id"])
            await until(lambda: _status(dsn, job, "failed"), within=30,
                        message="the job gave up")
        row = await _job(dsn, job)
        assert row["error_code"] == "input_changed"
        assert runs == FREE_RERUNS + 2

    asyncio.run(main())
