"""The unknown-kind sweep during ordinary restarts and outages: a kind's backlog is failed only
once the kind has gone unserved for the grace, and the rows its jobs were for are reset."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support.db import sql
from tests.support.inproc import running_worker, until
from worker.job import Job
from worker.registry import JobKind, Registry

GRACE = 60.0


async def _ok(conn: Any, job: Job) -> None:
    return None


def _registry(kind: str = "a") -> Registry:
    registry = Registry()
    registry.register(JobKind(kind, _ok))
    return registry


async def _rows(dsn: str, query: str, params: Any = None) -> list[dict[str, Any]]:
    return await asyncio.to_thread(sql, dsn, query, params)


def _old_jobs(dsn: str, kind: str, count: int) -> list[int]:
    """A backlog that has waited an hour, not due for another hour (nobody claims it)."""
    return [sql(dsn, "INSERT INTO queue.jobs (kind, subject, created_at, run_at) VALUES "
                     "(%s, %s, now() - interval '1 hour', now() + interval '1 hour') "
                     "RETURNING id", (kind, f"{kind}{i}"))[0]["id"] for i in range(count)]


async def _beats(dsn: str, worker_id: str, count: int) -> None:
    """Wait for `count` more heartbeats of the worker: each one ran the sweep."""
    for _ in range(count):
        before = (await _rows(dsn, "SELECT heartbeat_at FROM queue.workers "
                                   "WHERE worker_id = %s", (worker_id,)))[0]["heartbeat_at"]
        await until(lambda b=before: _rows(dsn, "SELECT 1 FROM queue.workers WHERE "
                                                "worker_id = %s AND heartbeat_at > %s",
                                           (worker_id, b)), message="a heartbeat")


async def _fleet_up_for_the_grace(dsn: str) -> None:
    await _rows(dsn, "UPDATE queue.workers SET started_at = now() - interval '1 hour' "
                     "RETURNING 1")


def _statuses(dsn: str, ids: list[int]) -> list[tuple[str, str | None]]:
    return [(r["status"], r["error_code"]) for r in sql(
        dsn, "SELECT status, error_code FROM queue.jobs WHERE id = ANY(%s) ORDER BY id",
        (ids,))]


def test_a_restart_of_a_kinds_only_worker_does_not_fail_its_backlog(dsn: str) -> None:
    """Kind b's only worker stopped cleanly a moment ago (restarting). The worker of kind a
    sweeps meanwhile: b was served seconds ago, so its hour-old backlog stays pending, while
    a kind never served by anyone is failed."""
    backlog = _old_jobs(dsn, "b", 3)
    typo = _old_jobs(dsn, "no.such.kind", 1)

    async def main() -> None:
        async with running_worker(dsn, _registry("b"), worker_id="b-worker"):
            pass  # started and stopped cleanly: its row is gone, b was served until now
        async with running_worker(dsn, _registry(), unknown_kind_grace=GRACE,
                                  heartbeat_interval=0.1) as w:
            await _fleet_up_for_the_grace(dsn)
            await until(lambda: _rows(dsn, "SELECT 1 FROM queue.jobs WHERE id = %s "
                                           "AND status = 'failed'", (typo[0],)),
                        message="the sweep failed the unknown kind")
            await _beats(dsn, w.settings.worker_id, 2)

    asyncio.run(main())
    assert _statuses(dsn, typo) == [("failed", "unknown_kind")]
    assert _statuses(dsn, backlog) == [("pending", None)] * 3


def test_the_first_worker_back_from_an_outage_gives_every_kind_the_grace(dsn: str) -> None:
    """Everything was down for an hour; the worker of kind a comes back first. It fails
    nothing while the fleet has been up less than the grace; once it has, kind b's backlog
    (last served an hour ago) is failed."""
    backlog = _old_jobs(dsn, "b", 2)
    sql(dsn, "INSERT INTO queue.kinds_seen (kind, last_seen_at) VALUES "
             "('a', now() - interval '1 hour'), ('b', now() - interval '1 hour')")

    async def main() -> None:
        async with running_worker(dsn, _registry(), unknown_kind_grace=GRACE,
                                  heartbeat_interval=0.1) as w:
            await _beats(dsn, w.settings.worker_id, 3)
            assert _statuses(dsn, backlog) == [("pending", None)] * 2
            await _fleet_up_for_the_grace(dsn)
            await until(lambda: _rows(dsn, "SELECT 1 FROM queue.jobs WHERE id = ANY(%s) "
                                           "AND status = 'failed' HAVING count(*) = 2",
                                      (backlog,)), message="b's backlog failed")

    asyncio.run(main())
    assert _statuses(dsn, backlog) == [("failed", "unknown_kind")] * 2


def test_swept_explanation_and_embedding_jobs_reset_their_rows(dsn: str) -> None:
    """The kinds' failure hooks (queue.failure_hooks) run for the jobs the sweep fails: a
    question is not left `pending` for good, so it can be asked for again."""
    user = sql(dsn, "INSERT INTO app.users (email) VALUES ('s@x') RETURNING id")[0]["id"]
    course = sql(dsn, "INSERT INTO app.courses (user_id, title) VALUES (%s, 'c') RETURNING id",
                 (user,))[0]["id"]
    question = sql(dsn, "INSERT INTO app.questions (course_id, question_text, choice_1, "
                        "choice_2, choice_3, choice_4, correct_choice) VALUES "
                        "(%s, 'q', '1', '2', '3', '4', 1) RETURNING id", (course,))[0]["id"]
    sql(dsn, "UPDATE app.questions SET ai_explanation_status = 'pending' WHERE id = %s",
        (question,))
    sql(dsn, "INSERT INTO queue.jobs (kind, subject, payload, created_at) VALUES "
             "('explanation', 'x', jsonb_build_object('question_id', %s::bigint), "
             " now() - interval '1 hour'), "
             "('explanation', 'y', '{\"question_id\": \"1; DROP TABLE app.questions\"}', "
             " now() - interval '1 hour')", (question,))
    # the embedding job its insert enqueued: unserved for an hour too
    sql(dsn, "UPDATE queue.jobs SET created_at = now() - interval '1 hour'")

    async def main() -> None:
        # no periodic maintenance here: its embedding retry (app.retry_failed_embeddings) sets
        # a failed embedding pending again, which would race the assertion below; that retry
        # has its own tests (tests/integration/test_retention.py)
        async with running_worker(dsn, _registry(), unknown_kind_grace=GRACE,
                                  heartbeat_interval=0.1, maintenance_interval=0):
            await _fleet_up_for_the_grace(dsn)
            await until(lambda: _rows(dsn, "SELECT 1 FROM queue.jobs WHERE status = 'pending' "
                                           "HAVING count(*) = 0"), message="all swept")

    asyncio.run(main())
    assert sql(dsn, "SELECT ai_explanation_status, embedding_status FROM app.questions "
                    "WHERE id = %s", (question,)) == [
        {"ai_explanation_status": "failed", "embedding_status": "failed"}]
    assert {(r["kind"], r["status"], r["error_code"]) for r in sql(
        dsn, "SELECT kind, status, error_code FROM queue.jobs")} == {
        ("explanation", "failed", "unknown_kind"), ("embedding", "failed", "unknown_kind")}


def test_a_heartbeat_puts_back_a_removed_worker_row(dsn: str) -> None:
    async def main() -> None:
        async with running_worker(dsn, _registry(), heartbeat_interval=0.1) as w:
            await _rows(dsn, "DELETE FROM queue.workers RETURNING 1")
            await until(lambda: _rows(dsn, "SELECT kinds FROM queue.workers WHERE "
                                           "worker_id = %s", (w.settings.worker_id,)),
                        message="the row is back")

    asyncio.run(main())
