"""Cron-style schedules (migration 0026): an operator declares that a kind's job is enqueued
on a schedule; the fleet's heartbeat fires each due slot once. Real PostgreSQL; the clock is
passed in (queue.fire_schedules(p_now)), so no test sleeps for a minute to pass.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support.db import one, sql

# a Monday, well after the schedules below are declared
T0 = datetime(2027, 1, 4, 10, 0, tzinfo=UTC)


def _fire(dsn: str, at: datetime) -> list[dict[str, Any]]:
    return sql(dsn, "SELECT * FROM queue.fire_schedules(%s)", (at,))


def _schedule(dsn: str, name: str, cron: str, kind: str = "test.effect",
              payload: str = '{"n": 1}') -> None:
    sql(dsn, "SELECT queue.schedule(%s, %s, %s, %s::jsonb)", (name, kind, cron, payload))


def _jobs(dsn: str, kind: str = "test.effect") -> list[dict[str, Any]]:
    return sql(dsn, "SELECT subject, payload, status FROM queue.jobs WHERE kind = %s "
                    "ORDER BY id", (kind,))


def test_a_due_slot_is_enqueued_once_and_the_next_at_its_time(dsn: str) -> None:
    _schedule(dsn, "every-minute", "* * * * *")
    fired = _fire(dsn, T0 + timedelta(seconds=10))
    assert [(r["name"], r["slot"]) for r in fired] == [("every-minute", T0)]
    assert _fire(dsn, T0 + timedelta(seconds=20)) == []
    assert _fire(dsn, T0 + timedelta(seconds=59)) == []
    assert [r["slot"] for r in _fire(dsn, T0 + timedelta(seconds=61))] == [
        T0 + timedelta(minutes=1)]
    jobs = _jobs(dsn)
    assert [j["subject"] for j in jobs] == ["every-minute:2027-01-04T10:00Z",
                                            "every-minute:2027-01-04T10:01Z"]
    assert all(j["payload"] == {"n": 1} and j["status"] == "pending" for j in jobs)
    row = sql(dsn, "SELECT last_fired_at, last_job_id FROM queue.schedules")[0]
    assert row["last_fired_at"] == T0 + timedelta(minutes=1) and row["last_job_id"] is not None


def test_slots_missed_while_no_worker_ran_enqueue_only_the_latest(dsn: str) -> None:
    _schedule(dsn, "five", "*/5 * * * *")
    _fire(dsn, T0)
    fired = _fire(dsn, T0 + timedelta(hours=3, minutes=7))
    assert [r["slot"] for r in fired] == [T0 + timedelta(hours=3, minutes=5)]
    assert len(_jobs(dsn)) == 2


def test_slots_before_the_declaration_are_not_enqueued(dsn: str) -> None:
    _schedule(dsn, "every-minute", "* * * * *")
    declared = one(dsn, "SELECT declared_at FROM queue.schedules")
    assert _fire(dsn, declared) == []
    assert _fire(dsn, declared - timedelta(days=1)) == []


def test_a_paused_kind_still_gets_its_jobs_which_wait_for_the_resume(dsn: str) -> None:
    sql(dsn, "SELECT queue.pause('test.effect')")
    _schedule(dsn, "every-minute", "* * * * *")
    assert len(_fire(dsn, T0)) == 1
    assert [j["status"] for j in _jobs(dsn)] == ["pending"]


def test_unschedule_removes_it(dsn: str) -> None:
    _schedule(dsn, "every-minute", "* * * * *")
    assert one(dsn, "SELECT queue.unschedule('every-minute')") is True
    assert one(dsn, "SELECT queue.unschedule('every-minute')") is False
    assert _fire(dsn, T0) == []


def test_declaring_it_again_replaces_it(dsn: str) -> None:
    _schedule(dsn, "job", "* * * * *")
    _schedule(dsn, "job", "0 * * * *", payload='{"n": 2}')
    assert sql(dsn, "SELECT cron, payload FROM queue.schedules") == [
        {"cron": "0 * * * *", "payload": {"n": 2}}]
    assert [r["slot"] for r in _fire(dsn, T0 + timedelta(minutes=30))] == [T0]


def test_two_runners_at_once_enqueue_a_slot_once(dsn: str) -> None:
    _schedule(dsn, "every-minute", "* * * * *")
    with psycopg.connect(dsn, row_factory=dict_row) as first, \
            psycopg.connect(dsn, row_factory=dict_row, autocommit=True) as second:
        fired = first.execute("SELECT * FROM queue.fire_schedules(%s)", (T0,)).fetchall()
        assert len(fired) == 1  # not committed yet: its turn (and the row) are held
        assert second.execute("SELECT * FROM queue.fire_schedules(%s)", (T0,)).fetchall() == []
        first.commit()
        assert second.execute("SELECT * FROM queue.fire_schedules(%s)", (T0,)).fetchall() == []
    assert len(_jobs(dsn)) == 1


def test_one_bad_row_does_not_stop_the_others(dsn: str) -> None:
    _schedule(dsn, "a-good-one", "* * * * *")
    _schedule(dsn, "b-broken", "* * * * *")
    # only the owner can write such a row; the worker's tick must survive it all the same
    sql(dsn, "UPDATE queue.schedules SET cron = '* * *' WHERE name = 'b-broken'")
    assert [r["name"] for r in _fire(dsn, T0)] == ["a-good-one"]


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("cron", "after", "now", "slot"), [
    ("*/15 * * * *", "2027-01-04 10:00", "2027-01-04 10:44:59", "2027-01-04 10:30"),
    ("5,10-12 * * * *", "2027-01-04 10:00", "2027-01-04 10:11:30", "2027-01-04 10:11"),
    ("0 9 * * 1-5", "2027-01-01 00:00", "2027-01-03 23:59", "2027-01-01 09:00"),  # Fri
    ("0 9 * * 1-5", "2027-01-01 09:00", "2027-01-03 23:59", None),  # the weekend
    ("0 0 1 * *", "2026-10-15 00:00", "2026-12-07 00:00", "2026-12-01 00:00"),
    ("0 0 10 * 5", "2026-11-07 00:00", "2026-11-12 00:00", "2026-11-10 00:00"),  # dom or dow
    ("0 0 10 * 5", "2026-11-07 00:00", "2026-11-09 23:59", None),
    ("0 0 * * 5", "2026-11-07 00:00", "2026-11-14 00:00", "2026-11-13 00:00"),
    ("0 0 * * 7", "2026-12-01 00:00", "2026-12-07 00:00", "2026-12-06 00:00"),  # Sunday
    ("0 0 * * 0", "2026-12-01 00:00", "2026-12-07 00:00", "2026-12-06 00:00"),
    ("30 2 * 2 *", "2026-01-01 00:00", "2026-06-01 00:00", "2026-02-28 02:30"),
    ("0 0 29 2 *", "2026-01-01 00:00", "2028-03-01 00:00", "2028-02-29 00:00"),
    ("@daily", "2026-12-01 00:00", "2026-12-07 10:00", "2026-12-07 00:00"),
    ("@hourly", "2026-12-07 09:00", "2026-12-07 10:59", "2026-12-07 10:00"),
    ("  0   12  * * *  ", "2026-12-01 00:00", "2026-12-07 10:00", "2026-12-06 12:00"),
    ("59 23 31 12 *", "2026-12-31 23:58", "2026-12-31 23:59", "2026-12-31 23:59"),
])
def test_cron_slots(dsn: str, cron: str, after: str, now: str, slot: str | None) -> None:
    got = one(dsn, "SELECT queue.cron_latest(%s, %s, %s) AS slot", (cron, _at(after), _at(now)))
    assert got == (_at(slot) if slot else None)


@pytest.mark.parametrize("cron", [
    "", "* * * *", "* * * * * *", "60 * * * *", "*/0 * * * *", "5-1 * * * *", "a * * * *",
    "0 0 32 * *", "0 0 0 * *", "0 0 * 13 *", "0 0 * * 8", "1,,2 * * * *", "-1 * * * *",
    "@sometimes", "0 24 * * *", "*/99999999999 * * * *", "0 0 30 2 *", None,
])
def test_a_bad_cron_is_refused_with_a_reason(dsn: str, cron: str | None) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as caught:
        _schedule(dsn, "bad", cron)  # type: ignore[arg-type]  # None on purpose
    assert "cron" in str(caught.value)
    assert sql(dsn, "SELECT * FROM queue.schedules") == []


@pytest.mark.parametrize(("name", "kind", "payload"), [
    ("has space", "test.effect", "{}"), ("", "test.effect", "{}"), ("x" * 101, "k", "{}"),
    ("ok", "", "{}"), ("ok", "test.effect", '"a string"'),
])
def test_bad_names_kinds_and_payloads_are_refused(dsn: str, name: str, kind: str,
                                                  payload: str) -> None:
    with pytest.raises((psycopg.errors.InvalidParameterValue, psycopg.errors.CheckViolation)):
        _schedule(dsn, name, "* * * * *", kind=kind, payload=payload)


def test_a_tick_with_nothing_due_writes_nothing(dsn: str) -> None:
    """Every worker calls it every heartbeat: when no slot is due it must not take an xid
    (it would hold back vacuum's horizon however briefly, and burn xids all day)."""
    _schedule(dsn, "every-minute", "* * * * *")
    _fire(dsn, T0)
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        assert conn.execute("SELECT * FROM queue.fire_schedules(%s)",
                            (T0 + timedelta(seconds=30),)).fetchall() == []
        row = conn.execute("SELECT pg_current_xact_id_if_assigned() AS xid").fetchone()
        assert row is not None and row["xid"] is None
