"""Connection cuts: the server terminates worker sessions (claims, LISTEN, attempt bookkeeping,
model accounting) again and again mid-run; no job may be lost or done twice, no worker dies.
"""

from __future__ import annotations

import random
import time
from collections import Counter
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
    one,
    report,
    sql,
    wait_terminal,
)
from tests.support import fake_openai as fake

pytestmark = pytest.mark.chaos


@dataclass(frozen=True)
class Plan:
    jobs: int
    cuts: int
    workers: int = 3
    timeout: float = 120


PLANS = {"reduced": Plan(jobs=250, cuts=30), "full": Plan(jobs=1500, cuts=200, timeout=600)}


def _role(application_name: str) -> str:
    if application_name == "worker-accounting":
        return "accounting"
    if application_name.endswith(":listen"):
        return "listen"
    if application_name.endswith(":attempts"):
        return "bookkeeping"
    return "claim"


def _sessions(dsn: str) -> list[dict[str, Any]]:
    return sql(dsn, "SELECT pid, application_name, state FROM pg_stat_activity "
                    "WHERE datname = current_database() AND usename = %s "
                    "AND (application_name LIKE 'worker:%%' "
                    "     OR application_name = 'worker-accounting')", (LOGIN_ROLE,))


def _cut(dsn: str, rng: random.Random, cuts: Counter[str]) -> None:
    """Terminate one to three worker sessions, preferring claims caught mid-transaction
    (a handler running, or its write-back and completion being written)."""
    sessions = _sessions(dsn)
    if not sessions:
        return
    in_claim = [s for s in sessions if _role(s["application_name"]) == "claim"
                and s["state"] in ("idle in transaction", "active")]
    pool = in_claim if in_claim and rng.random() < 0.6 else sessions
    for victim in rng.sample(pool, min(len(pool), rng.randint(1, 3))):
        if one(dsn, "SELECT pg_terminate_backend(%s)", (victim["pid"],)):
            role = _role(victim["application_name"])
            mid = role == "claim" and victim["state"] != "idle"
            cuts[f"{role}{' (mid-claim)' if mid else ''}"] += 1


def test_connection_cut(size: str, seed: int, rng: random.Random, dsn: str, worker_dsn: str,
                        model: fake.FakeOpenAI, fleets: Callable[..., Fleet]) -> None:
    plan = PLANS[size]
    course = Course(dsn)
    model.fallback["chat"] = answering(course, rng, max_delay=0.2)
    explained = [course.add(n, key=rng.randint(1, 4)) for n in range(plan.jobs // 10)]
    other = plan.jobs - len(explained)
    specs: list[tuple[str, dict[str, Any], int]] = [
        ("chaos.slow", {"seconds": round(rng.uniform(0.05, 0.5), 2)}, 4) if n % 4 == 0 else
        ("chaos.retry", {"succeed_on": 2}, 4) if n % 4 == 1 else ("chaos.effect", {}, 4)
        for n in range(other)]
    fleet = fleets(worker_dsn, model_env(model))
    fleet.start(plan.workers)
    started = time.monotonic()
    waves = 5
    job_ids: list[int] = []
    cuts: Counter[str] = Counter()
    for wave in range(waves):
        job_ids += enqueue(dsn, specs[wave::waves])
        job_ids += [course.request(qid) for qid in explained[wave::waves]]
        for _ in range(plan.cuts // waves):
            time.sleep(rng.uniform(0.02, 0.25))  # chaos pacing
            _cut(dsn, rng, cuts)
            assert not fleet.crashed(), fleet.crashed()

    wait_terminal(dsn, job_ids, plan.timeout, fleet)
    elapsed = time.monotonic() - started
    assert len(fleet.alive) == plan.workers and not fleet.crashed()
    codes = fleet.stop()
    assert all(code == 0 for code in codes.values()), codes

    found = audit(dsn, job_ids, course, model)
    assert found.problems() == {}
    assert found.jobs == plan.jobs
    assert not fleet.events("slot_error"), fleet.events("slot_error")[:3]
    searched = assert_no_secrets(fleet.output(), database_text(dsn))
    report("connection_cut", size, seed, {
        "workers": plan.workers, "terminated": sum(cuts.values()),
        "terminated_by_role": dict(sorted(cuts.items())), **found.figures(),
        "claim_failures_logged": len(fleet.events("claim_failed")),
        "secret_chars_searched": searched, "seconds": round(elapsed, 1)})
