"""Retention: finished jobs past their status's age go with their attempts, in batches, except
the latest job of each subject; model calls past theirs are added to the daily rollup first,
so the daily view reads the same; one worker of the fleet does it per interval."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from tests.support.db import sql
from tests.support.inproc import running_worker, until
from worker.job import Job
from worker.registry import JobKind, Registry

AGES = "interval '7 days', interval '30 days', interval '90 days'"


def _job(dsn: str, kind: str, subject: str | None, status: str, days_ago: float) -> int:
    job = sql(dsn, "INSERT INTO queue.jobs (kind, subject, status, completed_at, attempts) "
                   "VALUES (%s, %s, %s, CASE WHEN %s <> 'pending' THEN now() - "
                   "make_interval(days => %s) END, 1) RETURNING id",
              (kind, subject, status, status, days_ago))[0]["id"]
    sql(dsn, "INSERT INTO queue.attempts (job_id, attempt, worker_id, claim_xid, finished_at, "
             "outcome) VALUES (%s, 1, 'w', (1000 + %s)::text::xid8, now(), %s)",
        (job, job, status if status != "pending" else None))
    return job


def _ids(dsn: str, ids: list[int]) -> list[int]:
    return [r["id"] for r in sql(dsn, "SELECT id FROM queue.jobs WHERE id = ANY(%s) "
                                      "ORDER BY id", (ids,))]


def test_prune_keeps_what_is_young_active_or_the_latest_of_its_subject(dsn: str) -> None:
    old_done = _job(dsn, "k", "a", "completed", 8)
    _job(dsn, "k", "a", "completed", 1)                         # a's latest: kept
    young = _job(dsn, "k", "b", "completed", 1)
    _job(dsn, "k", "b", "pending", 0)                             # b's latest
    failed_young = _job(dsn, "k", "c", "failed", 8)               # failed: 30 days
    failed_old = _job(dsn, "k", "c", "failed", 31)
    latest_failed = _job(dsn, "k", "d", "failed", 200)            # the only one of d
    no_subject = _job(dsn, "k", None, "completed", 8)
    _job(dsn, "k", "c", "completed", 0)                           # c's latest
    everything = [r["id"] for r in sql(dsn, "SELECT id FROM queue.jobs ORDER BY id")]

    dry = sql(dsn, f"SELECT * FROM queue.prune({AGES}, 1000, true)")
    assert {r["item"]: r["deleted"] for r in dry}["jobs"] == 3
    assert _ids(dsn, everything) == everything

    done = sql(dsn, f"SELECT * FROM queue.prune({AGES})")
    assert {r["item"]: r["deleted"] for r in done}["jobs"] == 3
    gone = {old_done, failed_old, no_subject}
    kept = _ids(dsn, everything)
    assert not gone & set(kept)
    assert {young, failed_young, latest_failed} <= set(kept)
    assert sql(dsn, "SELECT count(*) AS n FROM queue.attempts WHERE job_id = ANY(%s)",
               (list(gone),)) == [{"n": 0}]
    assert len(kept) == len(everything) - 3


def test_pruned_model_calls_still_count_in_the_daily_view(dsn: str) -> None:
    sql(dsn, "INSERT INTO queue.model_calls (kind, call, backend, model, prompt_tokens, "
             "completion_tokens, latency_ms, outcome, error_code, created_at) "
             "SELECT 'explanation', 'chat', 'openai', 'm', 100, 20, 50, "
             "CASE WHEN g % 5 = 0 THEN 'error' ELSE 'ok' END, "
             "CASE WHEN g % 5 = 0 THEN 'timeout' END, "
             "now() - make_interval(days => 100 + g % 3) FROM generate_series(1, 30) g")
    sql(dsn, "INSERT INTO queue.model_calls (kind, call, backend, model, prompt_tokens, "
             "completion_tokens, latency_ms, outcome) VALUES "
             "('explanation', 'chat', 'openai', 'm', 7, 3, 10, 'ok')")
    view = "SELECT * FROM queue.model_usage_daily ORDER BY day"
    before = sql(dsn, view)
    done = sql(dsn, f"SELECT * FROM queue.prune({AGES}, 20)")  # two batches needed
    assert {r["item"]: r["deleted"] for r in done}["model_calls"] == 20
    sql(dsn, f"SELECT * FROM queue.prune({AGES}, 20)")
    assert sql(dsn, "SELECT count(*) AS n FROM queue.model_calls") == [{"n": 1}]
    assert sql(dsn, view) == before


def test_ages_under_an_hour_are_refused(dsn: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        sql(dsn, "SELECT * FROM queue.prune(interval '0', interval '30 days', "
                 "interval '90 days')")


def test_maintenance_runs_once_per_interval_for_the_whole_fleet(dsn: str) -> None:
    _job(dsn, "k", "e", "completed", 8)
    _job(dsn, "k", "e", "completed", 0)
    call = f"SELECT * FROM queue.maintenance(interval '1 hour', {AGES})"
    with psycopg.connect(dsn) as other:
        # another worker's run in progress holds the lock: this one returns at once
        other.execute("SELECT pg_advisory_xact_lock(hashtext('queue.maintenance'))")
        assert sql(dsn, call) == []
    first = sql(dsn, call)
    assert {r["item"]: r["n"] for r in first}["jobs"] == 1
    _job(dsn, "k", "f", "completed", 8)
    _job(dsn, "k", "f", "completed", 0)
    assert sql(dsn, call) == []  # ran less than an hour ago


def test_a_worker_prunes_on_its_heartbeat(dsn: str) -> None:
    old = _job(dsn, "k", "g", "completed", 8)
    _job(dsn, "k", "g", "completed", 0)

    async def ok(conn: Any, job: Job) -> None:
        return None

    async def main() -> None:
        registry = Registry()
        registry.register(JobKind("k", ok))
        async with running_worker(dsn, registry, heartbeat_interval=0.2,
                                  maintenance_interval=60):
            async def pruned() -> bool:
                return _ids(dsn, [old]) == []
            await until(pruned, message="the heartbeat's prune")

    asyncio.run(main())


def test_maintenance_retries_failed_embeddings_a_capped_number_at_a_time(dsn: str) -> None:
    """The design retries embeddings that ended `failed` on its next tick: each maintenance
    run sets up to its cap of them pending again and enqueues their jobs."""
    course = sql(dsn, "WITH u AS (INSERT INTO app.users (email) VALUES ('r@x') RETURNING id) "
                      "INSERT INTO app.courses (user_id, title) SELECT id, 'c' FROM u "
                      "RETURNING id")[0]["id"]
    ids = [sql(dsn, "INSERT INTO app.questions (course_id, question_text) VALUES (%s, %s) "
                    "RETURNING id", (course, f"q{i}"))[0]["id"] for i in range(3)]
    sql(dsn, "UPDATE queue.jobs SET status = 'failed', completed_at = now() "
             "WHERE kind = 'embedding'")
    sql(dsn, "UPDATE app.questions SET embedding_status = 'failed' WHERE id = ANY(%s)", (ids,))
    call = (f"SELECT * FROM queue.maintenance(interval '1 hour', {AGES}, 10000, 2)")
    first = {r["item"]: r["n"] for r in sql(dsn, call)}
    assert first["embeddings_retried"] == 2
    statuses = sorted(r["embedding_status"] for r in sql(
        dsn, "SELECT embedding_status FROM app.questions WHERE id = ANY(%s)", (ids,)))
    assert statuses == ["failed", "pending", "pending"]
    pending = sql(dsn, "SELECT count(*) AS n FROM queue.jobs WHERE kind = 'embedding' "
                       "AND status = 'pending'")
    assert pending == [{"n": 2}]
