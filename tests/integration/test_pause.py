"""Pausing a kind: `queue.pause(kind)` stops every worker claiming it at its next claim (the
check is in `queue.claim`), jobs already running finish, the pause is a row (it survives a
restart) and the unknown-kind sweep leaves a paused kind's backlog alone;
`queue.resume(kind)` notifies, so idle workers claim at once rather than at their poll."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from tests.support.db import sql
from tests.support.inproc import effect, fetch, running_worker, until
from worker.job import Job
from worker.registry import JobKind, Registry


def _registry(*kinds: JobKind) -> Registry:
    registry = Registry()
    for kind in kinds:
        registry.register(kind)
    return registry


async def _ok(conn: Any, job: Job) -> None:
    await effect(conn, job, job.kind)


def _enqueue(dsn: str, kind: str, n: int, batch: str = "") -> list[int]:
    return [sql(dsn, "SELECT queue.enqueue(%s, %s) AS id",
                (kind, f"{kind}{batch}-{i}"))[0]["id"] for i in range(n)]


async def _statuses(dsn: str, ids: list[int]) -> list[str]:
    rows = await fetch(dsn, "SELECT status FROM queue.jobs WHERE id = ANY(%s) ORDER BY id",
                       (ids,))
    return [r["status"] for r in rows]


def test_a_paused_kind_waits_while_others_run_and_a_resume_wakes_it(dsn: str) -> None:
    claimed: list[int] = []

    def on_event(event: str, job_id: int | None, at: float) -> None:
        if event == "claimed" and job_id is not None:
            claimed.append(job_id)

    async def main() -> None:
        assert sql(dsn, "SELECT queue.pause('p', 'model upgrade') AS paused") == [
            {"paused": True}]
        assert sql(dsn, "SELECT queue.pause('p') AS paused") == [{"paused": False}]
        paused = _enqueue(dsn, "p", 3)
        # a long poll: only the resume's notification can wake the idle slots in time
        async with running_worker(dsn, _registry(JobKind("p", _ok), JobKind("q", _ok)),
                                  on_event=on_event, poll_interval=60):
            others = _enqueue(dsn, "q", 3)
            more = _enqueue(dsn, "p", 2, "more")  # their notification wakes a slot of p: no claim
            await until(lambda: _all(dsn, others, "completed"), message="q's jobs done")
            assert await _statuses(dsn, paused + more) == ["pending"] * 5
            assert not set(claimed) & set(paused + more)
            assert sql(dsn, "SELECT queue.resume('p') AS resumed") == [{"resumed": True}]
            await until(lambda: _all(dsn, paused + more, "completed"), within=30,
                        message="p's jobs after the resume")
        assert sql(dsn, "SELECT queue.resume('p') AS resumed") == [{"resumed": False}]

    asyncio.run(main())


async def _all(dsn: str, ids: list[int], status: str) -> bool:
    return await _statuses(dsn, ids) == [status] * len(ids)


def test_a_job_running_when_its_kind_is_paused_finishes(dsn: str) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(conn: Any, job: Job) -> None:
        started.set()
        await release.wait()
        await effect(conn, job, "slow")

    async def main() -> None:
        [first] = _enqueue(dsn, "slow", 1)
        async with running_worker(dsn, _registry(JobKind("slow", slow))):
            await asyncio.wait_for(started.wait(), 20)
            await fetch(dsn, "SELECT queue.pause('slow') AS paused")
            [later] = _enqueue(dsn, "slow", 1, "later")
            release.set()
            await until(lambda: _all(dsn, [first], "completed"), message="the running job")
            assert await _statuses(dsn, [later]) == ["pending"]

    asyncio.run(main())


def test_a_pause_outlives_a_restart(dsn: str) -> None:
    async def main() -> None:
        sql(dsn, "SELECT queue.pause('r')")
        jobs = _enqueue(dsn, "r", 2)
        for _ in range(2):  # two workers' lives, one after the other
            async with running_worker(dsn, _registry(JobKind("r", _ok), JobKind("s", _ok))):
                marker = _enqueue(dsn, "s", 1, uuid.uuid4().hex)
                await until(lambda m=marker: _all(dsn, m, "completed"), message="s's job")
            assert await _statuses(dsn, jobs) == ["pending", "pending"]
        rows = await fetch(dsn, "SELECT kind, paused_by = current_user AS by_us "
                                "FROM queue.paused_kinds")
        assert rows == [{"kind": "r", "by_us": True}]

    asyncio.run(main())


def test_the_unknown_kind_sweep_leaves_a_paused_kinds_backlog_alone(dsn: str) -> None:
    """Nobody runs kind `gone` and its jobs are an hour old: unpaused, the sweep fails them;
    paused, an operator is holding them on purpose."""
    def old_jobs(kind: str) -> list[int]:
        return [sql(dsn, "INSERT INTO queue.jobs (kind, subject, created_at) VALUES "
                         "(%s, %s, now() - interval '1 hour') RETURNING id",
                    (kind, f"{kind}{i}"))[0]["id"] for i in range(2)]

    held, orphaned = old_jobs("held"), old_jobs("orphaned")
    sql(dsn, "SELECT queue.pause('held')")
    sql(dsn, "SELECT queue.worker_alive('sweeper', ARRAY['other'], true)")
    sql(dsn, "UPDATE queue.workers SET started_at = now() - interval '1 hour'")
    failed = sql(dsn, "SELECT queue.fail_unknown_kinds(interval '10 minutes') AS n")
    assert failed == [{"n": 2}]
    rows = sql(dsn, "SELECT id, status FROM queue.jobs WHERE id = ANY(%s) ORDER BY id",
               (held + orphaned,))
    assert [r["status"] for r in rows] == ["pending", "pending", "failed", "failed"]
