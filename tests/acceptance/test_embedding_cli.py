"""Embeddings through the real command line: backfill with progress, and the start-up
dimension check, against a worker process talking to the fake model server."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg

from tests.support import fake_openai as fake
from tests.support.db import sql as _sql
from tests.support.procs import ROOT, WorkerProcess
from tests.support.vectors import responder


def _model_env(server: fake.FakeOpenAI) -> dict[str, str]:
    return {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test-key",
            "WORKER_EMBED_MODEL": "fake-embed", "WORKER_KINDS": "embedding"}


def test_backfill_command_waits_for_the_worker_with_a_progress_bar(dsn: str) -> None:
    user = _sql(dsn, "INSERT INTO app.users (email) VALUES ('a@b') RETURNING id")[0]["id"]
    course = _sql(dsn, "INSERT INTO app.courses (user_id, title) VALUES (%s, 'c') RETURNING id",
                  (user,))[0]["id"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        for i in range(40):
            conn.execute("INSERT INTO app.questions (course_id, question_text) VALUES (%s, %s)",
                         (course, f"문제 {i}"))
    with fake.FakeOpenAI() as server:
        server.fallback["embeddings"] = responder()
        worker = WorkerProcess(dsn, env=_model_env(server), plugins="")
        try:
            worker.wait_ready()
            env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
            env["DATABASE_URL"] = dsn
            result = subprocess.run(
                [sys.executable, "-m", "worker", "backfill", "embeddings", "--course",
                 str(course), "--timeout", "60"],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
            again = subprocess.run(
                [sys.executable, "-m", "worker", "backfill", "embeddings", "--no-wait"],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        finally:
            worker.stop()
    assert result.returncode == 0, result.stderr
    assert "40 row(s) need an embedding" in result.stdout
    assert "40/40" in result.stderr  # the progress bar reached the end
    assert again.returncode == 0 and "0 row(s) need an embedding" in again.stdout
    assert _sql(dsn, "SELECT count(*) AS n FROM app.questions WHERE embedding_status = 'ready'"
                ) == [{"n": 40}]


def test_a_model_with_the_wrong_dimension_stops_start_up(dsn: str) -> None:
    with fake.FakeOpenAI() as server:
        server.fallback["embeddings"] = responder(dim=384)
        worker = WorkerProcess(dsn, env=_model_env(server), plugins="")
        try:
            code = worker.wait(timeout=60)
        finally:
            worker.stop()
    assert code == 3
    assert "384-dimensional" in worker.output() and "1024" in worker.output()
