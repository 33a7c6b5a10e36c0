"""The worker changes queue rows only through functions that check its claim.

A login of `llm_worker` holds no write right on queue.jobs, queue.attempts, queue.workers or
queue.kinds_seen. `queue.claim` locks due jobs for the calling transaction and hands back a
receipt per job, bound to that transaction's xid and the job's id; recording attempts,
finishing jobs and giving attempts back each take the receipts and refuse any that do not
match. A worker's registry row belongs to the login that made it.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.reliability.support import login_dsn, one, sql

pytestmark = pytest.mark.chaos

Conn = psycopg.Connection[dict[str, Any]]


def _connect(dsn: str, autocommit: bool = False) -> Conn:
    return psycopg.connect(dsn, autocommit=autocommit, row_factory=dict_row)


def _jobs(dsn: str, n: int, kind: str = "receipts") -> list[int]:
    return [one(dsn, "SELECT queue.enqueue(%s, %s)", (kind, f"s{i}")) for i in range(n)]


def _claim(conn: Conn, kind: str = "receipts", limit: int = 10) -> list[dict[str, Any]]:
    return conn.execute(b"SELECT * FROM queue.claim(%s, %s, NULL)", (kind, limit)).fetchall()


def _record(conn: Conn, rows: list[dict[str, Any]], receipts: list[str] | None = None,
            xid: str | None = None) -> list[dict[str, Any]]:
    return conn.execute(
        b"SELECT * FROM queue.record_attempts(%s, %s, %s::xid8, 'w')",
        ([r["id"] for r in rows], receipts or [r["receipt"] for r in rows],
         xid or rows[0]["claim_xid"])).fetchall()


def _finish(conn: Conn, job_ids: list[int], receipts: list[str],
            attempt_ids: list[int | None]) -> dict[str, Any] | None:
    n = len(job_ids)
    return conn.execute(
        b"SELECT * FROM queue.finish_jobs('w', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (job_ids, receipts, attempt_ids, [1] * n, ["completed"] * n, ["completed"] * n,
         [None] * n, [None] * n, [0.0] * n, [None] * n)).fetchone()


@pytest.fixture
def worker(dsn: str) -> str:
    return login_dsn(dsn, role="receipts_login", password="receipts-pw")


def test_a_claim_records_and_finishes_its_own_jobs(dsn: str, worker: str) -> None:
    jobs = _jobs(dsn, 2)
    with _connect(worker) as claim, _connect(worker, autocommit=True) as side:
        rows = _claim(claim)
        assert sorted(r["id"] for r in rows) == jobs
        attempts = _record(side, rows)
        done = _finish(claim, [r["id"] for r in rows], [r["receipt"] for r in rows],
                       [a["attempt_id"] for a in attempts])
        claim.commit()
    assert done is not None and (done["jobs"], done["attempts"]) == (2, 2)
    assert {r["status"] for r in sql(dsn, "SELECT status FROM queue.jobs WHERE id = ANY(%s)",
                                     (jobs,))} == {"completed"}


def test_receipts_are_bound_to_the_claiming_transaction_and_the_job(
        dsn: str, worker: str) -> None:
    """Another transaction of the same login can neither count attempts against a claim's
    jobs nor finish them, with forged receipts or with the claim's own."""
    _jobs(dsn, 2)
    with _connect(worker) as claim, _connect(worker) as other, \
            _connect(worker, autocommit=True) as side:
        rows = _claim(claim)
        forged = ["0" * 64 for _ in rows]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            _record(side, rows, receipts=forged)
        swapped = [rows[1]["receipt"], rows[0]["receipt"]]  # right claim, wrong jobs
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            _record(side, rows, receipts=swapped)
        other_xid = one(worker, "SELECT pg_current_xact_id()::text")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            _record(side, rows, xid=other_xid)  # the claim's receipts, another xid
        attempts = _record(side, rows)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            _finish(other, [r["id"] for r in rows], [r["receipt"] for r in rows],
                    [a["attempt_id"] for a in attempts])
        other.rollback()
        claim.rollback()
    counted = sql(dsn, "SELECT count(*) AS n FROM queue.attempts a JOIN queue.jobs j "
                       "ON j.id = a.job_id WHERE j.kind = 'receipts'")
    assert counted == [{"n": 2}]


def test_only_the_claims_receipt_gives_an_attempt_back(dsn: str, worker: str) -> None:
    _jobs(dsn, 1)
    with _connect(worker) as claim, _connect(worker, autocommit=True) as side:
        rows = _claim(claim)
        [attempt] = _record(side, rows)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            side.execute(b"SELECT queue.release_attempts(%s, %s)",
                         ([attempt["attempt_id"]], ["f" * 64]))
        released = side.execute(b"SELECT queue.release_attempts(%s, %s) AS n",
                                ([attempt["attempt_id"]], [rows[0]["receipt"]])).fetchone()
        claim.rollback()
    assert released == {"n": 1}
    outcome = one(dsn, "SELECT outcome FROM queue.attempts WHERE id = %s",
                  (attempt["attempt_id"],))
    assert outcome == "released"


def test_a_workers_registry_row_belongs_to_its_login(dsn: str, worker: str) -> None:
    intruder = login_dsn(dsn, role="receipts_intruder", password="intruder-pw")
    one(worker, "SELECT queue.worker_alive('mine', ARRAY['receipts'], true) IS NULL")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        one(intruder, "SELECT queue.worker_alive('mine', ARRAY['other'], false) IS NULL")
    one(intruder, "SELECT queue.worker_stopped('mine') IS NULL")  # not its row: nothing
    rows = sql(dsn, "SELECT kinds, heartbeat_at <= now() AS sane FROM queue.workers "
                    "WHERE worker_id = 'mine'")
    assert rows == [{"kinds": ["receipts"], "sane": True}]
    one(worker, "SELECT queue.worker_stopped('mine') IS NULL")
    assert sql(dsn, "SELECT 1 FROM queue.workers WHERE worker_id = 'mine'") == []


def test_the_unknown_kind_sweep_refuses_a_grace_under_a_minute(dsn: str, worker: str) -> None:
    """With a grace of zero any worker could fail every pending job of a kind whose workers
    are briefly down; the sweep needs at least a minute."""
    job = _jobs(dsn, 1, kind="nobody_runs_this")[0]
    one(worker, "SELECT queue.worker_alive('sweeper', ARRAY['receipts'], true) IS NULL")
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        one(worker, "SELECT queue.fail_unknown_kinds(interval '0')")
    assert one(dsn, "SELECT status FROM queue.jobs WHERE id = %s", (job,)) == "pending"
