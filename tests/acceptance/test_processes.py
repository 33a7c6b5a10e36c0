"""Real `python -m worker run` processes: exactly-once under concurrency, crashes, SIGTERM."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from tests.support.db import one as _one
from tests.support.db import sql as _sql
from tests.support.procs import WorkerProcess, wait_for


def _enqueue(dsn: str, kind: str, payload: str = "{}", max_attempts: int = 2) -> int:
    return int(_one(dsn, "SELECT queue.enqueue(%s, NULL, %s::jsonb, p_max_attempts => %s)",
                    (kind, payload, max_attempts)))


@pytest.fixture
def workers() -> Any:
    started: list[WorkerProcess] = []

    def start(dsn: str, **kwargs: Any) -> WorkerProcess:
        proc = WorkerProcess(dsn, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def test_three_workers_run_each_of_1000_jobs_exactly_once(dsn: str, workers: Any) -> None:
    procs = [workers(dsn) for _ in range(3)]
    for proc in procs:
        proc.wait_ready()
    _sql(dsn, "SELECT queue.enqueue('test.effect', 'job:' || g) FROM generate_series(1, 1000) g")
    wait_for(lambda: _one(dsn, "SELECT count(*) FROM queue.jobs WHERE status = 'completed'")
             == 1000, timeout=120, message="1000 jobs completed")
    for proc in procs:
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
    effects = _sql(dsn, "SELECT count(*) AS n, count(DISTINCT job_id) AS jobs, "
                        "count(DISTINCT worker_pid) AS workers FROM test_effects")[0]
    assert effects["n"] == 1000 and effects["jobs"] == 1000
    assert effects["workers"] >= 2, "the work was not shared between processes"
    assert _one(dsn, "SELECT count(*) FROM queue.attempts WHERE outcome <> 'completed'") == 0


def test_a_job_of_a_killed_worker_is_finished_by_another(dsn: str, workers: Any) -> None:
    first = workers(dsn)
    first.wait_ready()
    job = _enqueue(dsn, "test.slow", '{"seconds": 2}', max_attempts=3)
    wait_for(lambda: _sql(dsn, "SELECT 1 FROM test_started WHERE job_id = %s", (job,)),
             message="job started")
    first.signal(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL
    second = workers(dsn)
    second.wait_ready()
    wait_for(lambda: _one(dsn, "SELECT status FROM queue.jobs WHERE id = %s", (job,))
             == "completed", message="job completed by the second worker")
    row = _sql(dsn, "SELECT attempts, worker_id FROM queue.jobs WHERE id = %s", (job,))[0]
    assert row["attempts"] == 2
    assert row["worker_id"].endswith(f":{second.pid}")
    effects = _sql(dsn, "SELECT attempt, worker_pid FROM test_effects WHERE job_id = %s", (job,))
    assert effects == [{"attempt": 2, "worker_pid": second.pid}]
    attempts = _sql(dsn, "SELECT attempt, outcome FROM queue.attempts WHERE job_id = %s "
                         "ORDER BY attempt", (job,))
    assert attempts == [{"attempt": 1, "outcome": "worker_lost"},
                        {"attempt": 2, "outcome": "completed"}]


def test_a_job_that_kills_every_worker_ends_failed(dsn: str, workers: Any) -> None:
    job = _enqueue(dsn, "test.poison", max_attempts=2)
    kills = 0
    for _ in range(5):
        proc = workers(dsn)
        code = proc.wait(timeout=60) if kills < 2 else None
        if code is None:
            break
        assert code == -signal.SIGKILL, proc.output()
        kills += 1
    assert kills == 2
    wait_for(lambda: _one(dsn, "SELECT status FROM queue.jobs WHERE id = %s", (job,))
             == "failed", message="poison job failed")
    row = _sql(dsn, "SELECT attempts, error_code, error_message FROM queue.jobs WHERE id = %s",
               (job,))[0]
    assert row["attempts"] == 2 and row["error_code"] == "worker_lost"
    assert "worker lost" in row["error_message"]
    assert _one(dsn, "SELECT count(*) FROM test_started WHERE job_id = %s", (job,)) == 2


def test_sigterm_lets_in_flight_jobs_finish_and_claims_nothing_new(
    dsn: str, workers: Any
) -> None:
    proc = workers(dsn, env={"WORKER_CONCURRENCY": "test.slow=1"})
    proc.wait_ready()
    running = _enqueue(dsn, "test.slow", '{"seconds": 2}')
    wait_for(lambda: _sql(dsn, "SELECT 1 FROM test_started WHERE job_id = %s", (running,)),
             message="job started")
    queued = [_enqueue(dsn, "test.slow", '{"seconds": 0}') for _ in range(3)]
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
    assert _one(dsn, "SELECT status FROM queue.jobs WHERE id = %s", (running,)) == "completed"
    assert _one(dsn, "SELECT count(*) FROM test_effects WHERE job_id = %s", (running,)) == 1
    rows = _sql(dsn, "SELECT status, attempts FROM queue.jobs WHERE id = ANY(%s)", (queued,))
    assert rows == [{"status": "pending", "attempts": 0}] * 3
    assert _one(dsn, "SELECT count(*) FROM queue.attempts WHERE job_id = ANY(%s)",
                (queued,)) == 0
    assert proc.events("stop_requested") and proc.events("worker_stopped")


def test_past_the_grace_period_jobs_are_rolled_back_without_using_an_attempt(
    dsn: str, workers: Any
) -> None:
    proc = workers(dsn, env={"WORKER_SHUTDOWN_GRACE": "0.5"})
    proc.wait_ready()
    job = _enqueue(dsn, "test.slow", '{"seconds": 30}')
    wait_for(lambda: _sql(dsn, "SELECT 1 FROM test_started WHERE job_id = %s", (job,)),
             message="job started")
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
    row = _sql(dsn, "SELECT status, attempts FROM queue.jobs WHERE id = %s", (job,))[0]
    assert row == {"status": "pending", "attempts": 0}
    assert _sql(dsn, "SELECT outcome FROM queue.attempts WHERE job_id = %s", (job,)) == [
        {"outcome": "released"}]
    assert proc.events("drain_grace_expired")
    # the next worker starts it again as attempt 1
    again = workers(dsn, env={"WORKER_SHUTDOWN_GRACE": "0.5"})
    again.wait_ready()
    wait_for(lambda: _sql(dsn, "SELECT attempt FROM test_started WHERE job_id = %s "
                               "AND worker_pid = %s", (job, again.pid)),
             message="restarted")
    assert _sql(dsn, "SELECT attempt FROM test_started WHERE worker_pid = %s",
                (again.pid,)) == [{"attempt": 1}]


def test_a_second_signal_stops_at_once(dsn: str, workers: Any) -> None:
    proc = workers(dsn, env={"WORKER_SHUTDOWN_GRACE": "60"})
    proc.wait_ready()
    job = _enqueue(dsn, "test.slow", '{"seconds": 60}')
    wait_for(lambda: _sql(dsn, "SELECT 1 FROM test_started WHERE job_id = %s", (job,)),
             message="job started")
    proc.signal(signal.SIGTERM)
    wait_for(lambda: proc.events("stop_requested"), message="first signal seen")
    proc.signal(signal.SIGINT)
    assert proc.wait(timeout=15) == 0
    assert proc.events("hard_stop")
    assert _one(dsn, "SELECT status FROM queue.jobs WHERE id = %s", (job,)) == "pending"
