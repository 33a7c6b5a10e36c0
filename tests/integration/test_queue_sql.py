"""The queue's SQL contract on a real server: enqueue, NOTIFY, requeue, cancel, stats."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from worker.queries import q

Conn = psycopg.Connection[dict[str, Any]]


def _connect(dsn: str, autocommit: bool = True) -> Conn:
    return psycopg.connect(dsn, autocommit=autocommit, row_factory=dict_row)


def _job(conn: Conn, job_id: int) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM queue.job_states WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return row


def _fail(conn: Conn, job_id: int, code: str = "boom") -> None:
    conn.execute(
        "UPDATE queue.jobs SET status = 'failed', error_code = %s, completed_at = now() "
        "WHERE id = %s", (code, job_id))


class Claim:
    """A worker's claim, made with the worker's own queries, held open by the test."""

    def __init__(self, dsn: str, kind: str) -> None:
        self.conn = _connect(dsn, autocommit=False)
        self.side = _connect(dsn)
        rows = self.conn.execute(q("claim_jobs"),
                                 {"kind": kind, "limit": 10, "now": None}).fetchall()
        self.ids = [r["id"] for r in rows]
        if rows:
            self.receipts = [r["receipt"] for r in rows]
            self.attempts = self.side.execute(q("record_attempts"), {
                "job_ids": self.ids, "receipts": self.receipts,
                "claim_xid": rows[0]["claim_xid"], "worker_id": "test"}).fetchall()

    def close(self) -> None:
        self.conn.rollback()
        self.conn.close()
        self.side.close()


def test_concurrent_enqueue_of_one_subject_makes_one_active_job(dsn: str) -> None:
    n = 16
    barrier = threading.Barrier(n)
    ids: list[int] = []
    errors: list[BaseException] = []

    def enqueue() -> None:
        try:
            with _connect(dsn) as conn:
                barrier.wait()
                row = conn.execute("SELECT queue.enqueue('k', 'question:1') AS id").fetchone()
                assert row is not None
                ids.append(row["id"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=enqueue) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with _connect(dsn) as conn:
        rows = conn.execute("SELECT id FROM queue.jobs WHERE kind = 'k'").fetchall()
    assert len(rows) == 1
    assert set(ids) == {rows[0]["id"]}


def test_finished_jobs_stay_as_history_and_a_new_job_can_follow(conn: Conn) -> None:
    first = conn.execute("SELECT queue.enqueue('k', 's') AS id").fetchone()["id"]
    _fail(conn, first)
    second = conn.execute("SELECT queue.enqueue('k', 's') AS id").fetchone()["id"]
    assert second != first
    statuses = conn.execute(
        "SELECT status FROM queue.jobs WHERE subject = 's' ORDER BY id").fetchall()
    assert [r["status"] for r in statuses] == ["failed", "pending"]


def test_many_inserts_in_one_transaction_send_one_notification_per_kind(dsn: str) -> None:
    with _connect(dsn) as listener, _connect(dsn, autocommit=False) as app:
        listener.execute("LISTEN queue_jobs")
        app.execute("SELECT queue.enqueue('a', 's' || g) FROM generate_series(1, 100) g")
        app.execute("INSERT INTO queue.jobs (kind) SELECT 'b' FROM generate_series(1, 50)")
        app.commit()
        got = [n.payload for n in listener.notifies(timeout=1.0)]
    assert sorted(got) == ["a", "b"]


def test_requeue_of_a_failed_job_creates_a_linked_new_job(conn: Conn) -> None:
    job = conn.execute("SELECT queue.enqueue('k', 's', '{\"x\": 1}') AS id").fetchone()["id"]
    _fail(conn, job)
    new = conn.execute(q("requeue"), {"job_id": job}).fetchone()["job_id"]
    assert new != job
    old_row, new_row = _job(conn, job), _job(conn, new)
    assert old_row["requeued_to"] == new and new_row["requeued_from"] == job
    assert new_row["status"] == "pending" and new_row["attempts"] == 0
    assert new_row["payload"] == {"x": 1}
    # requeueing the same failed job again does not make a second one
    assert conn.execute(q("requeue"), {"job_id": job}).fetchone()["job_id"] == new


def test_requeue_storm_on_one_failed_job_creates_exactly_one_job(dsn: str) -> None:
    with _connect(dsn) as conn:
        job = conn.execute("INSERT INTO queue.jobs (kind) VALUES ('k') RETURNING id"
                           ).fetchone()["id"]
        _fail(conn, job)
    n = 12
    barrier = threading.Barrier(n)
    results: list[int] = []

    def requeue() -> None:
        with _connect(dsn) as c:
            barrier.wait()
            results.append(c.execute(q("requeue"), {"job_id": job}).fetchone()["job_id"])

    threads = [threading.Thread(target=requeue) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with _connect(dsn) as conn:
        created = conn.execute("SELECT id FROM queue.jobs WHERE requeued_from = %s",
                               (job,)).fetchall()
    assert len(created) == 1
    assert set(results) == {created[0]["id"]}


def test_requeue_and_cancel_refuse_a_running_job(dsn: str) -> None:
    with _connect(dsn) as conn:
        job = conn.execute("SELECT queue.enqueue('k', 's') AS id").fetchone()["id"]
    claim = Claim(dsn, "k")
    try:
        assert claim.ids == [job]
        with _connect(dsn) as conn:
            assert _job(conn, job)["state"] == "running"
            stats = conn.execute("SELECT state, jobs FROM queue.stats WHERE kind = 'k'"
                                 ).fetchall()
            assert stats == [{"state": "running", "jobs": 1}]
            with pytest.raises(psycopg.errors.ObjectInUse, match="is running"):
                conn.execute(q("requeue"), {"job_id": job})
            with pytest.raises(psycopg.errors.ObjectInUse, match="is running"):
                conn.execute(q("cancel"), {"job_id": job})
    finally:
        claim.close()
    with _connect(dsn) as conn:
        # the claim ended without finishing: the job is pending again, not running
        assert _job(conn, job)["state"] == "pending"


def test_cancel_pending_and_finished_jobs(conn: Conn) -> None:
    pending = conn.execute("SELECT queue.enqueue('k', 'a') AS id").fetchone()["id"]
    done = conn.execute("SELECT queue.enqueue('k', 'b') AS id").fetchone()["id"]
    _fail(conn, done)
    assert conn.execute(q("cancel"), {"job_id": pending}).fetchone()["cancelled"] is True
    row = _job(conn, pending)
    assert row["status"] == "cancelled" and row["completed_at"] is not None
    assert conn.execute(q("cancel"), {"job_id": done}).fetchone()["cancelled"] is False
    with pytest.raises(psycopg.errors.NoDataFound):
        conn.execute(q("cancel"), {"job_id": 999_999})


def test_cancel_of_a_finished_job_a_requeue_holds_says_finished_without_waiting(
        dsn: str) -> None:
    """cancel locks before it looks; a finished row it cannot lock (a requeue holds it) is
    still reported as finished, not as running, and cancel does not wait for it."""
    with _connect(dsn) as conn:
        job = conn.execute("SELECT queue.enqueue('k', 's') AS id").fetchone()["id"]
        _fail(conn, job)
    with _connect(dsn, autocommit=False) as requeuer, _connect(dsn) as conn:
        requeuer.execute(q("requeue"), {"job_id": job})  # holds the failed row until it ends
        conn.execute("SET lock_timeout = '1s'")
        assert conn.execute(q("cancel"), {"job_id": job}).fetchone()["cancelled"] is False
        requeuer.rollback()
    with _connect(dsn) as conn:
        assert _job(conn, job)["status"] == "failed"


def test_requeue_of_a_pending_job_makes_it_due_now(conn: Conn) -> None:
    job = conn.execute(
        "SELECT queue.enqueue('k', 's', p_run_at => now() + interval '1 hour') AS id"
    ).fetchone()["id"]
    assert conn.execute(q("requeue"), {"job_id": job}).fetchone()["job_id"] == job
    assert _job(conn, job)["run_at"] <= conn.execute("SELECT now() AS t").fetchone()["t"]


def test_bulk_requeue_filters_and_takes_the_latest_failure_per_subject(conn: Conn) -> None:
    # an older failure of subject a: history, not to be requeued as well
    old = conn.execute("INSERT INTO queue.jobs (kind, subject, status, error_code, completed_at)"
                       " VALUES ('k', 'a', 'failed', 'timeout', now() - interval '1 day')"
                       " RETURNING id").fetchone()["id"]
    ids = {}
    for kind, subject, code in [("k", "a", "timeout"), ("k", "b", "timeout"),
                                ("k", "c", "guard_fail"), ("other", "a", "timeout")]:
        ids[(kind, subject)] = conn.execute(
            "SELECT queue.enqueue(%s, %s) AS id", (kind, subject)).fetchone()["id"]
        _fail(conn, ids[(kind, subject)], code)
    count = conn.execute(q("requeue_failed"), {
        "kind": "k", "error_code": "timeout", "older_than": None, "since": None,
    }).fetchone()["jobs"]
    assert count == 2
    pending = conn.execute("SELECT kind, subject, requeued_from FROM queue.jobs "
                           "WHERE status = 'pending' ORDER BY subject").fetchall()
    assert pending == [
        {"kind": "k", "subject": "a", "requeued_from": ids[("k", "a")]},
        {"kind": "k", "subject": "b", "requeued_from": ids[("k", "b")]},
    ]
    assert _job(conn, old)["requeued_to"] is None
    # running it again finds nothing left to requeue
    assert conn.execute(q("requeue_failed"), {
        "kind": "k", "error_code": "timeout", "older_than": None, "since": None,
    }).fetchone()["jobs"] == 0


def test_bulk_requeue_inside_a_savepoint_counts_the_jobs_it_enqueued(dsn: str) -> None:
    """Inside a subtransaction the new rows carry the subtransaction's xid, not the top-level
    one; the count must not depend on which."""
    with _connect(dsn) as conn:
        for subject in ("a", "b"):
            _fail(conn, conn.execute("SELECT queue.enqueue('k', %s) AS id",
                                     (subject,)).fetchone()["id"])
    with _connect(dsn, autocommit=False) as conn:
        conn.execute("SAVEPOINT s")
        count = conn.execute(q("requeue_failed"), {
            "kind": None, "error_code": None, "older_than": None, "since": None,
        }).fetchone()["jobs"]
        enqueued = conn.execute("SELECT count(*) AS n FROM queue.jobs "
                                "WHERE requeued_from IS NOT NULL").fetchone()["n"]
        conn.rollback()
    assert (count, enqueued) == (2, 2)


def test_enqueue_does_not_wait_for_a_running_job(dsn: str) -> None:
    with _connect(dsn) as conn:
        job = conn.execute("SELECT queue.enqueue('k', 's') AS id").fetchone()["id"]
    claim = Claim(dsn, "k")
    try:
        with _connect(dsn) as app:
            app.execute("SET lock_timeout = '1s'")
            # a second enqueue of the running subject is a no-op that returns the active job
            again = app.execute("SELECT queue.enqueue('k', 's') AS id").fetchone()["id"]
        assert again == job
    finally:
        claim.close()


def test_recording_a_claims_attempts_twice_counts_them_once(dsn: str) -> None:
    """The bookkeeping insert is retried after a lost reply: it finds its own rows."""
    with _connect(dsn) as conn:
        job = conn.execute("SELECT queue.enqueue('k', 's') AS id").fetchone()["id"]
    claim = Claim(dsn, "k")
    try:
        xid = claim.conn.execute("SELECT pg_current_xact_id()::text AS x").fetchone()["x"]
        again = claim.side.execute(q("record_attempts"), {
            "job_ids": [job], "receipts": claim.receipts, "claim_xid": xid,
            "worker_id": "test"}).fetchall()
        assert again == claim.attempts
        assert again[0]["attempt"] == 1 and again[0]["prior"] == 0
        with _connect(dsn) as conn:
            rows = conn.execute("SELECT count(*) AS n FROM queue.attempts WHERE job_id = %s",
                                (job,)).fetchone()
        assert rows == {"n": 1}
    finally:
        claim.close()


def test_deleting_jobs_deletes_their_attempts_and_nothing_else(dsn: str) -> None:
    """Attempts have no foreign key to jobs (it made every claim create a MultiXact); the
    statement trigger of migration 0009 deletes them with their jobs, as the cascade did."""
    with _connect(dsn) as conn:
        gone = conn.execute("SELECT queue.enqueue('k', 'gone') AS id").fetchone()["id"]
        kept = conn.execute("SELECT queue.enqueue('k', 'kept') AS id").fetchone()["id"]
    claim = Claim(dsn, "k")
    claim.close()  # one attempt each, released by nobody: both stay open
    with _connect(dsn) as conn:
        before = conn.execute("SELECT count(*) AS n FROM queue.attempts "
                              "WHERE job_id = ANY(%s)", ([gone, kept],)).fetchone()
        assert before == {"n": 2}
        conn.execute("DELETE FROM queue.jobs WHERE id = %s", (gone,))
        left = conn.execute("SELECT job_id FROM queue.attempts WHERE job_id = ANY(%s)",
                            ([gone, kept],)).fetchall()
        assert left == [{"job_id": kept}]


@pytest.mark.parametrize("payload", [
    '{"a": ' + "[" * 40 + "]" * 40 + "}",            # nested deeper than 31 levels
    '{"text": "' + "x" * 70_000 + '"}',              # more than 64 KiB of text
])
def test_a_payload_too_deep_or_too_large_is_refused_at_the_door(conn: Any, payload: str
                                                                  ) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="payload_bounded"):
        conn.execute("SELECT queue.enqueue('k', 's', %s::jsonb)", (payload,))
    # the bound leaves ordinary payloads alone
    conn.execute("SELECT queue.enqueue('k', 's', %s::jsonb)",
                 ('{"a": ' + "[" * 30 + "]" * 30 + ', "t": "' + "x" * 60_000 + '"}',))


def test_a_deferred_attempt_is_not_counted(dsn: str) -> None:
    """An attempt closed as `deferred` (a budget held the job back) leaves the job's attempts
    untouched: a job allowed one attempt still gets it."""
    with _connect(dsn) as conn:
        job = conn.execute("SELECT queue.enqueue('k', 's', '{}'::jsonb, p_max_attempts => 1) "
                           "AS id").fetchone()["id"]
    first = Claim(dsn, "k")
    with _connect(dsn) as conn:
        conn.execute("UPDATE queue.attempts SET finished_at = now(), outcome = 'deferred' "
                     "WHERE job_id = %s", (job,))
    first.close()
    again = Claim(dsn, "k")
    try:
        assert [(a["prior"], a["attempt"]) for a in again.attempts] == [(0, 1)]
    finally:
        again.close()


def test_snoozed_attempts_are_free_up_to_their_cap(dsn: str) -> None:
    """A job the model server kept answering 429 keeps its one attempt through 20 snoozes;
    from the 21st each one counts, so a server that never lets it through cannot keep it
    pending for ever."""
    with _connect(dsn) as conn:
        job = conn.execute("SELECT queue.enqueue('k', 's', '{}'::jsonb, p_max_attempts => 1) "
                           "AS id").fetchone()["id"]
        conn.execute("INSERT INTO queue.attempts (job_id, attempt, worker_id, claim_xid, "
                     "finished_at, outcome) SELECT %s, 1, 'w', g::text::xid8, now(), "
                     "'snoozed' FROM generate_series(1000, 1019) g", (job,))
    claim = Claim(dsn, "k")
    try:
        assert [(a["prior"], a["attempt"]) for a in claim.attempts] == [(0, 1)]
    finally:
        claim.close()
    with _connect(dsn) as conn:
        conn.execute("UPDATE queue.attempts SET finished_at = now(), outcome = 'snoozed' "
                     "WHERE job_id = %s AND finished_at IS NULL", (job,))
    spent = Claim(dsn, "k")
    try:
        assert [(a["prior"], a["attempt"], a["last_outcome"]) for a in spent.attempts] == [
            (1, None, "snoozed")]
    finally:
        spent.close()
