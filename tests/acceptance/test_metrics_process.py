"""The metrics endpoint of a real `python -m worker run`: on the configured address, ready
once up, and counting what an outage does to it (lost LISTEN connection, failed claims)."""

from __future__ import annotations

import json
import signal

from prometheus_client.parser import text_string_to_metric_families
from psycopg.conninfo import make_conninfo

from tests.support.db import sql
from tests.support.http import free_port, get
from tests.support.procs import WorkerProcess, wait_for


def _total(port: int, name: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(get(port, "/metrics")[1])
               for s in family.samples if s.name == name)


def test_an_outage_shows_as_listener_reconnects_and_claim_failures(dsn: str) -> None:
    """As the least-privilege role: its rights are enough for /readyz and /metrics/queue."""
    sql(dsn, "CREATE ROLE metrics_login LOGIN IN ROLE llm_worker")
    port = free_port()
    proc = WorkerProcess(make_conninfo(dsn, user="metrics_login"),
                         env={"WORKER_METRICS_PORT": str(port), "WORKER_METRICS_ADDR": "127.0.0.1"})
    try:
        proc.wait_ready()
        status, body = get(port, "/readyz")
        assert status == 200, body
        assert json.loads(body)["model"] == "answered"  # test kinds only: no model to ask
        queue = get(port, "/metrics/queue")[1]
        assert "worker_queue_up 1.0" in queue
        assert 'worker_queue_live_workers{kind="test.effect"} 1.0' in queue
        assert _total(port, "worker_listener_reconnects_total") == 0
        # every session of the worker is cut, as a server restart or a failover would
        sql(dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE application_name LIKE 'worker:%%' AND pid <> pg_backend_pid()")
        wait_for(lambda: _total(port, "worker_listener_reconnects_total") >= 1,
                 message="the listener's reconnect counted")
        wait_for(lambda: _total(port, "worker_claim_failures_total") >= 1,
                 message="a failed claim counted")
        # and it recovers by itself: ready again, jobs run
        wait_for(lambda: get(port, "/readyz")[0] == 200, message="ready again")
        job = sql(dsn, "SELECT queue.enqueue('test.effect', 'after-outage') AS id")[0]["id"]
        wait_for(lambda: sql(dsn, "SELECT 1 FROM queue.jobs WHERE id = %s AND "
                                  "status = 'completed'", (job,)), message="a job after it")
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
    finally:
        proc.stop()
