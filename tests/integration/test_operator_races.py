"""Operator functions racing a worker's commit: queue.cancel and queue.requeue called while the
claiming transaction of the job writes its completion and commits.

The race is forced, not hoped for. The operator call runs under a role that row-level security
applies to (superusers and the table's owner bypass it), and the policy on queue.jobs calls a
function that waits on an advisory lock the test holds. The call's first read of the job row
therefore stops after its snapshot was taken, while the worker's transaction still holds the
row `pending`; the worker then completes the job and commits, and only then is the lock
released. The test knows the call is waiting from pg_locks, not from a sleep.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql
from psycopg.rows import dict_row

from worker.queries import q

Conn = psycopg.Connection[dict[str, Any]]

# the advisory lock the policy waits on (advisory locks are per database, and so is each test)
GATE_KEY = 7_300_001


def _connect(dsn: str, autocommit: bool = True) -> Conn:
    return psycopg.connect(dsn, autocommit=autocommit, row_factory=dict_row)


@pytest.fixture
def operator_role(dsn: str) -> Iterator[str]:
    """A member of the operator role (llm_operator: just the grants the operator functions
    use), under row-level security whose policy waits for the gate. Roles are cluster-wide:
    a unique name, dropped at the end."""
    role = f"race_operator_{uuid.uuid4().hex[:10]}"
    ident = pgsql.Identifier(role)
    with _connect(dsn) as conn:
        conn.execute(pgsql.SQL("CREATE ROLE {} NOLOGIN IN ROLE llm_operator").format(ident))
        # plpgsql, not sql: the planner may inline a sql function and simplify the wait away
        conn.execute(pgsql.SQL("""
            CREATE FUNCTION public.race_gate() RETURNS boolean
            LANGUAGE plpgsql VOLATILE AS $$
            BEGIN
                PERFORM pg_advisory_xact_lock_shared({});
                RETURN true;
            END;
            $$""").format(pgsql.Literal(GATE_KEY)))
        conn.execute("ALTER TABLE queue.jobs ENABLE ROW LEVEL SECURITY")
        conn.execute("CREATE POLICY race_gate ON queue.jobs USING (public.race_gate())")
    try:
        yield role
    finally:
        with _connect(dsn) as conn:
            conn.execute(pgsql.SQL("DROP OWNED BY {}").format(ident))
            conn.execute(pgsql.SQL("DROP ROLE {}").format(ident))


def _wait_for_gate(conn: Conn, pid: int, timeout: float = 30.0) -> None:
    """Return once backend `pid` waits for the gate's advisory lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = %s AND locktype = 'advisory' "
            "AND NOT granted) AS waiting", (pid,)).fetchone()
        if row is not None and row["waiting"]:
            return
        time.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited for the gate")


def _call_while_worker_completes(dsn: str, role: str, job: int, query: bytes) -> Any:
    """Run a named query (one row, one column; `job_id` its parameter) as `role` while the
    worker that holds `job` completes it and commits. Its value, or the exception it raised."""
    with _connect(dsn, autocommit=False) as worker, _connect(dsn) as gate, \
            _connect(dsn) as operator:
        # the worker's claim: the row stays `pending`, locked until the claim ends
        claimed = worker.execute("SELECT id FROM queue.jobs WHERE id = %s FOR NO KEY UPDATE",
                                 (job,)).fetchall()
        assert claimed == [{"id": job}]
        gate.execute("SELECT pg_advisory_lock(%s)", (GATE_KEY,))
        operator.execute(pgsql.SQL("SET ROLE {}").format(pgsql.Identifier(role)))
        pid = operator.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]
        outcome: list[Any] = []

        def call() -> None:
            try:
                row = operator.execute(query, {"job_id": job}).fetchone()
                outcome.append(next(iter(row.values())) if row else None)
            except psycopg.Error as exc:
                outcome.append(exc)

        thread = threading.Thread(target=call)
        thread.start()
        try:
            _wait_for_gate(gate, pid)
            worker.execute("UPDATE queue.jobs SET status = 'completed', completed_at = now(), "
                           "updated_at = now() WHERE id = %s", (job,))
            worker.commit()
        finally:
            gate.execute("SELECT pg_advisory_unlock(%s)", (GATE_KEY,))
            thread.join(30)
        assert not thread.is_alive()
    return outcome[0]


def _statuses(dsn: str, kind: str) -> list[dict[str, Any]]:
    with _connect(dsn) as conn:
        return conn.execute("SELECT id, status, requeued_from, requeued_to FROM queue.jobs "
                            "WHERE kind = %s ORDER BY id", (kind,)).fetchall()


def test_cancel_racing_the_workers_commit_leaves_the_completed_job_completed(
        dsn: str, operator_role: str) -> None:
    """The job completes while cancel is under way: cancel says it had finished (false),
    and the job stays completed."""
    with _connect(dsn) as conn:
        job = conn.execute("SELECT queue.enqueue('k', 's') AS id").fetchone()["id"]
    outcome = _call_while_worker_completes(dsn, operator_role, job, q("cancel"))
    assert (outcome, _statuses(dsn, "k")) == (False, [
        {"id": job, "status": "completed", "requeued_from": None, "requeued_to": None}])


def test_requeue_racing_the_workers_commit_requeues_the_completed_job(
        dsn: str, operator_role: str) -> None:
    """The job completes while requeue is under way: requeue treats it as the finished job it
    now is, a new linked job, instead of setting the completed row back to pending."""
    with _connect(dsn) as conn:
        job = conn.execute("SELECT queue.enqueue('k', 's') AS id").fetchone()["id"]
    outcome = _call_while_worker_completes(dsn, operator_role, job, q("requeue"))
    assert isinstance(outcome, int) and outcome != job, outcome
    assert _statuses(dsn, "k") == [
        {"id": job, "status": "completed", "requeued_from": None, "requeued_to": outcome},
        {"id": outcome, "status": "pending", "requeued_from": job, "requeued_to": None}]
