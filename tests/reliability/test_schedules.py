"""Two real worker processes, logged in as the worker role, fire one cron schedule from their
heartbeats: the due slot is enqueued once and run once, whichever worker wins the turn.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest

from tests.reliability.support import Fleet, login_dsn, sql

pytestmark = pytest.mark.chaos


def _slots(dsn: str) -> list[dict[str, object]]:
    return sql(dsn, "SELECT j.subject, j.status, e.worker_pid FROM queue.jobs j "
                    "LEFT JOIN test_effects e ON e.job_id = j.id "
                    "WHERE j.kind = 'chaos.effect' ORDER BY j.id")


def test_two_workers_enqueue_a_due_slot_of_a_schedule_once(
        dsn: str, fleets: Callable[..., Fleet]) -> None:
    sql(dsn, "SELECT queue.schedule('every-minute', 'chaos.effect', '* * * * *')")
    # declared five minutes ago: a slot is due at once (only the latest of the missed five)
    sql(dsn, "UPDATE queue.schedules SET declared_at = now() - interval '5 minutes'")
    fleet = fleets(login_dsn(dsn), {"WORKER_KINDS": "", "WORKER_HEARTBEAT_INTERVAL": "0.2"})
    fleet.start(2)
    try:
        # the slot due at start; then both workers keep beating for two seconds (about ten
        # heartbeats each) without enqueuing it again. Successive slots are tested with a
        # passed clock in tests/integration/test_schedules.py, not by waiting a minute here.
        deadline = time.monotonic() + 60
        while (not any(r["status"] == "completed" for r in _slots(dsn))
               and time.monotonic() < deadline):
            time.sleep(0.2)
        time.sleep(2.0)
    finally:
        fleet.stop()
    rows = _slots(dsn)
    subjects = Counter(str(r["subject"]) for r in rows)
    assert len(subjects) >= 1, rows
    assert all(n == 1 for n in subjects.values()), subjects  # one job per slot
    assert all(r["status"] == "completed" and r["worker_pid"] for r in rows), rows
    assert all(s.startswith("every-minute:") and s.endswith("Z") for s in subjects)
    fired = fleet.events("schedules_fired")
    assert sum(len(e["slots"]) for e in fired) == len(rows)
