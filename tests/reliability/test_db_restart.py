"""Database restart mid-run, on an embedded PostgreSQL of the test's own (the session server
is shared): workers reconnect, LISTEN again, and finish; nothing is half-written.
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
    Fleet,
    OwnServer,
    assert_no_secrets,
    audit,
    database_text,
    enqueue,
    login_dsn,
    one,
    pid_of,
    report,
    sql,
    wait_terminal,
)
from tests.support import db as testdb
from tests.support.procs import wait_for

pytestmark = pytest.mark.chaos

# the fallback poll is far away: whatever runs soon after a restart was woken by the
# reconnect or by a NOTIFY on the new LISTEN connection
POLL = "60"


@dataclass(frozen=True)
class Plan:
    restarts: int
    jobs_per_phase: int
    timeout: float = 120


PLANS = {"reduced": Plan(restarts=2, jobs_per_phase=80),
         "full": Plan(restarts=6, jobs_per_phase=150, timeout=600)}


def _jobs(count: int, rng: random.Random) -> list[tuple[str, dict[str, Any], int]]:
    return [("chaos.slow", {"seconds": round(rng.uniform(0.2, 1.0), 2)}, 4)
            if rng.random() < 0.4 else ("chaos.effect", {}, 4) for _ in range(count)]


def _listen_sessions(dsn: str) -> set[int]:
    """Worker processes whose LISTEN connection is up (worker:<host>:<pid>:listen)."""
    return {pid_of(r["application_name"].rsplit(":", 1)[0]) for r in sql(
        dsn, "SELECT application_name FROM pg_stat_activity "
             "WHERE application_name LIKE 'worker:%%:listen' AND usename = %s", (LOGIN_ROLE,))}


def _wait_busy(dsn: str) -> bool:
    """Poll (up to 5 s) for a claim in progress, so the stop lands mid-job."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if one(dsn, "SELECT count(*) FROM queue.attempts WHERE finished_at IS NULL "
                    "AND pg_xact_status(claim_xid) = 'in progress'"):
            return True
        time.sleep(0.02)
    return False


def test_database_restart(size: str, seed: int, rng: random.Random, own_server: OwnServer,
                          fleets: Callable[..., Fleet]) -> None:
    plan = PLANS[size]
    admin = own_server.admin_dsn
    fleet = fleets(login_dsn(admin), {"WORKER_KINDS": "", "WORKER_POLL_INTERVAL": POLL})
    fleet.start(2)
    started = time.monotonic()
    job_ids = enqueue(admin, _jobs(plan.jobs_per_phase, rng))
    modes: list[str] = []
    hit_mid_claim = 0
    inserted_while_away: list[int] = []
    unheard = 0
    for n in range(plan.restarts):
        hit_mid_claim += _wait_busy(admin)
        mode = "fast" if n % 2 == 0 else "immediate"
        own_server.stop(mode)
        modes.append(mode)
        time.sleep(rng.uniform(0.3, 1.5))  # chaos pacing: the outage lasts a random while
        assert testdb.dsn_for(own_server.start(), "chaos") == admin
        # inserted before the workers are back: no LISTEN session hears these NOTIFYs
        listening = _listen_sessions(admin)
        away = enqueue(admin, _jobs(plan.jobs_per_phase, rng))
        unheard += len(away) if not listening else 0
        inserted_while_away += away
        job_ids += away
        # every worker LISTENs again: one more `listening` record each, after its loss
        for proc in fleet.alive:
            wait_for(lambda proc=proc, n=n: len(proc.events("listening")) >= n + 2,
                     timeout=60, message=f"worker {proc.pid} listening after restart {n + 1}")
        assert not fleet.crashed(), fleet.crashed()

    wait_terminal(admin, job_ids, plan.timeout, fleet)
    assert _listen_sessions(admin) == {proc.pid for proc in fleet.alive}
    # each restart cut each LISTEN connection once, and each came back
    for proc in fleet.alive:
        assert len(proc.events("listen_connection_lost")) == plan.restarts
    # with the fallback poll a minute away, a new job runs because its NOTIFY arrived
    late = enqueue(admin, [("chaos.effect", {}, 4)])
    wait_for(lambda: one(admin, "SELECT status FROM queue.jobs WHERE id = %s",
                         (late[0],)) == "completed", timeout=20,
             message="a job enqueued after the restarts, woken by NOTIFY")
    job_ids += late
    elapsed = time.monotonic() - started
    codes = fleet.stop()
    assert all(code == 0 for code in codes.values()), codes

    found = audit(admin, job_ids)
    assert found.problems() == {}
    assert one(admin, "SELECT count(*) FROM queue.jobs WHERE id = ANY(%s) "
                      "AND status = 'completed'", (inserted_while_away,)) == len(
        inserted_while_away)
    lost_connections = len(fleet.events("listen_connection_lost"))
    searched = assert_no_secrets(fleet.output(), database_text(admin))
    report("db_restart", size, seed, {
        "restarts": plan.restarts, "stop_modes": modes, "stops_mid_claim": hit_mid_claim,
        "inserted_while_away": len(inserted_while_away),
        "inserted_with_no_listener_connected": unheard,
        "listen_reconnects": lost_connections, "claim_failures_logged":
            len(fleet.events("claim_failed")), **found.figures(),
        "secret_chars_searched": searched, "seconds": round(elapsed, 1)})
