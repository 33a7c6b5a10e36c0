"""Kill loop: mixed jobs under three worker processes that are SIGKILLed and restarted again
and again; nothing may be lost, done twice or left stuck, and attempts must add up.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.reliability.support import (
    LOGIN_ROLE,
    Course,
    Fleet,
    answering,
    assert_no_secrets,
    audit,
    database_text,
    enqueue,
    model_env,
    pid_of,
    report,
    sql,
    wait_terminal,
)
from tests.support import fake_openai as fake
from tests.support.procs import WorkerProcess

pytestmark = pytest.mark.chaos


@dataclass(frozen=True)
class Plan:
    jobs: int
    kills: int
    workers: int = 3
    timeout: float = 120


PLANS = {"reduced": Plan(jobs=300, kills=8), "full": Plan(jobs=2000, kills=50, timeout=600)}


def _mix(plan: Plan, course: Course, rng: random.Random) -> list[tuple[str, Any]]:
    """The jobs in random order: 60 % side-effect jobs, 15 % slow, 13 % retrying (a few
    failing for good), 12 % explanations through the fake model."""
    jobs: list[tuple[str, Any]] = []
    for n in range(plan.jobs):
        share = n / plan.jobs
        if share < 0.60:
            jobs.append(("chaos.effect", ({}, 2)))
        elif share < 0.75:
            jobs.append(("chaos.slow", ({"seconds": round(rng.uniform(0.1, 1.0), 2)}, 3)))
        elif share < 0.88:
            final = rng.random() < 0.2
            jobs.append(("chaos.retry", ({"final": True} if final else {"succeed_on": 2}, 3)))
        else:
            marker = n
            jobs.append(("explanation", course.add(marker, key=rng.randint(1, 4))))
    rng.shuffle(jobs)
    return jobs


def _enqueue_wave(dsn: str, course: Course, wave: list[tuple[str, Any]]) -> list[int]:
    ids = enqueue(dsn, [(kind, *spec) for kind, spec in wave if kind != "explanation"])
    ids += [course.request(qid) for kind, qid in wave if kind == "explanation"]
    return ids


def _busy_workers(dsn: str, fleet: Fleet) -> list[WorkerProcess]:
    """Live workers holding a claim right now (an open attempt of an open transaction)."""
    rows = sql(dsn, "SELECT DISTINCT worker_id FROM queue.attempts WHERE finished_at IS NULL "
                    "AND pg_xact_status(claim_xid) = 'in progress'")
    busy = {pid_of(r["worker_id"]) for r in rows}
    return [proc for proc in fleet.alive if proc.pid in busy]


def _victim(dsn: str, fleet: Fleet, rng: random.Random) -> tuple[WorkerProcess, bool]:
    """A worker caught mid-claim when one is (polled for up to 3 s), else any."""
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        busy = _busy_workers(dsn, fleet)
        if busy:
            return rng.choice(busy), True
        time.sleep(0.02)
    return rng.choice(fleet.alive), False


def test_kill_loop(size: str, seed: int, rng: random.Random, dsn: str, worker_dsn: str,
                   model: fake.FakeOpenAI, fleets: Callable[..., Fleet]) -> None:
    plan = PLANS[size]
    course = Course(dsn)
    model.fallback["chat"] = answering(course, rng, max_delay=0.3)
    jobs = _mix(plan, course, rng)
    waves = [jobs[i::plan.kills + 1] for i in range(plan.kills + 1)]

    fleet = fleets(worker_dsn, model_env(model))
    fleet.start(plan.workers)
    started = time.monotonic()
    job_ids = _enqueue_wave(dsn, course, waves[0])
    sessions = {r["usename"] for r in sql(
        dsn, "SELECT usename FROM pg_stat_activity WHERE application_name LIKE 'worker%%' "
             "AND datname = current_database()")}
    assert sessions == {LOGIN_ROLE}, "every worker session logs in as the least-privilege role"

    mid_claim = 0
    for wave in waves[1:]:
        # chaos pacing: the moment of each kill is random, the victim one caught mid-claim
        time.sleep(rng.uniform(0.1, 0.8))
        job_ids += _enqueue_wave(dsn, course, wave)
        victim, busy = _victim(dsn, fleet, rng)
        mid_claim += busy
        fleet.kill(victim)
        fleet.start(1)
        assert not fleet.crashed(), fleet.crashed()

    wait_terminal(dsn, job_ids, plan.timeout, fleet)
    elapsed = time.monotonic() - started
    codes = fleet.stop()
    assert all(code == 0 for code in codes.values()), codes

    found = audit(dsn, job_ids, course, model)
    assert found.problems() == {}
    assert found.jobs == plan.jobs == len(set(job_ids))
    # attempts lost to a dead worker belong to workers this test killed
    assert found.worker_lost_workers <= fleet.killed
    assert len(found.worker_lost_workers) <= len(fleet.killed) == plan.kills
    assert not fleet.events("slot_error"), fleet.events("slot_error")[:3]
    searched = assert_no_secrets(fleet.output(), database_text(dsn))
    report("kill_loop", size, seed, {
        "workers": plan.workers, "kills": len(fleet.killed), "kills_mid_claim": mid_claim,
        "restarts": len(fleet.all) - plan.workers, **found.figures(),
        "secret_chars_searched": searched, "seconds": round(elapsed, 1)})
