"""With a history of 100,000 jobs (and model calls) every list of the dashboard is served by an
index: the plan of each list query, with the values a page passes, reads queue.jobs (or
queue.model_calls) through no Seq Scan.

Plans, not timings: the plan is what stays fast as the history grows."""

from __future__ import annotations

import datetime
import json
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from worker.queries import q

JOBS = 100_000


def _history(conn: psycopg.Connection[dict[str, Any]]) -> None:
    """100,000 jobs over 60 days: most completed, some failed, skipped and cancelled, 50
    pending; three kinds. And 100,000 model calls over the same days."""
    conn.execute(b"""
        INSERT INTO queue.jobs (kind, subject, status, attempts, error_code, error_message,
                                created_at, started_at, completed_at)
        SELECT (ARRAY['explanation', 'embedding', 'weakness_analysis'])[1 + i %% 3],
               'bulk:' || i,
               CASE WHEN i <= 50 THEN 'pending'
                    WHEN i %% 20 = 0 THEN 'failed'
                    WHEN i %% 47 = 0 THEN 'skipped'
                    WHEN i %% 53 = 0 THEN 'cancelled'
                    ELSE 'completed' END,
               1,
               CASE WHEN i > 50 AND i %% 20 = 0
                    THEN (ARRAY['guard_fail', 'parse_fail', 'timeout'])[1 + i %% 3] END,
               CASE WHEN i > 50 AND i %% 20 = 0 THEN 'failed in bulk' END,
               t, t, CASE WHEN i > 50 THEN t + interval '3 seconds' END
        FROM generate_series(1, %(jobs)s) AS i,
             LATERAL (SELECT now() - (i * interval '60 days') / %(jobs)s AS t) AS at
        """, {"jobs": JOBS})
    conn.execute(b"""
        INSERT INTO queue.model_calls (kind, call, backend, model, prompt_tokens,
                                       completion_tokens, latency_ms, outcome, created_at)
        SELECT 'explanation', 'chat', 'openai', 'm', 800, 150, 1000, 'ok',
               now() - (i * interval '60 days') / %(jobs)s
        FROM generate_series(1, %(jobs)s) AS i
        """, {"jobs": JOBS})
    conn.execute(b"ANALYZE queue.jobs")
    conn.execute(b"ANALYZE queue.model_calls")


def _scans(plan: dict[str, Any]) -> list[tuple[str, str]]:
    """(node type, relation) of every node of the plan that reads a relation."""
    found = [(plan["Node Type"], plan["Relation Name"])] if "Relation Name" in plan else []
    for child in plan.get("Plans", []):
        found += _scans(child)
    return found


# (query, the values a page passes): every list and summary of the pages that read queue.jobs
CASES: list[tuple[str, dict[str, Any]]] = [
    ("dash_jobs", {"status": None, "kind": None, "before": None, "limit": 51}),
    ("dash_jobs", {"status": None, "kind": None, "before": 50_000, "limit": 51}),
    ("dash_jobs", {"status": "failed", "kind": None, "before": None, "limit": 51}),
    ("dash_jobs", {"status": "pending", "kind": "embedding", "before": None, "limit": 51}),
    ("dash_jobs", {"status": "completed", "kind": "explanation", "before": 60_000,
                   "limit": 51}),
    ("dash_failures", {"kind": None, "error_code": None, "before_at": None, "before_id": None,
                       "limit": 51}),
    ("dash_failures", {"kind": "explanation", "error_code": "guard_fail",
                       "before_at": datetime.datetime.now(datetime.UTC)
                       - datetime.timedelta(days=20), "before_id": 30_000, "limit": 51}),
    ("dash_failure_groups", {"since": "24 hours"}),
    ("dash_failure_groups", {"since": "7 days"}),
    ("recent_failures", {"since": "1 hour"}),
    ("dash_finished", {}),
    ("dash_active", {}),
    ("dash_job", {"id": 12_345}),
    ("dash_question_jobs", {"id": 12_345}),
    ("dash_model_days", {"before": None, "days": 14}),
    ("dash_model_days", {"before": datetime.date.today() - datetime.timedelta(days=30),
                         "days": 14}),
]


@pytest.fixture(scope="module")
def history(pg_server: str, template_db: str) -> Any:
    """One database with the history, shared by the cases (they only read)."""
    from tests.support import db as testdb

    name = f"plans_{template_db}"
    url = testdb.create_database(pg_server, name, template=template_db)
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        _history(conn)
    yield url
    testdb.drop_database(pg_server, name)


@pytest.mark.parametrize(("name", "params"), CASES,
                         ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_a_list_query_reads_the_jobs_through_an_index(history: str, name: str,
                                                      params: dict[str, Any]) -> None:
    with psycopg.connect(history, row_factory=dict_row, prepare_threshold=None) as conn:
        count = conn.execute(b"SELECT count(*) AS n FROM queue.jobs").fetchone()
        assert count is not None and count["n"] >= JOBS
        row = conn.execute(b"EXPLAIN (FORMAT JSON) " + q(name), params).fetchone()
    assert row is not None
    plan = row["QUERY PLAN"]
    plan = plan if isinstance(plan, list) else json.loads(plan)
    scans = _scans(plan[0]["Plan"])
    table = "model_calls" if name == "dash_model_days" else "jobs"
    on_table = [node for node, relation in scans if relation == table]
    assert on_table, f"{name} does not read queue.{table}: {scans}"
    assert "Seq Scan" not in on_table, f"{name} scans every row of queue.{table}: " \
                                       f"{json.dumps(plan, indent=1)}"
