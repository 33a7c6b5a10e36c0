"""Fixtures of the dashboard tests: a course with questions and jobs in every state on a real
PostgreSQL, the dashboard on it (through Starlette's TestClient), and a signed-in session.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.support.db import one, sql
from worker.config import load_settings
from worker.dashboard import create_app

TOKEN = "dashboard-test-token-5f1c9a"
ORIGIN = "http://testserver"
EXPLANATION_MD = ("**정답은 2번**입니다.\n\n- 1번은 틀렸습니다.\n\n<script>alert(1)</script>\n\n"
                  "[click](javascript:alert(2))")


def seed(dsn: str) -> dict[str, Any]:
    """A course, its questions and jobs: one failed by the guard, one by an unparsable reply,
    one completed with its attempt and model call; a paused kind and a live worker."""
    user = one(dsn, "INSERT INTO app.users (email) VALUES ('dash@x') RETURNING id")
    course = one(dsn, "INSERT INTO app.courses (user_id, title, course_weakness_analysis) "
                      "VALUES (%s, '정보처리기사', %s) RETURNING id", (user, _analysis()))
    ready = one(dsn, "INSERT INTO app.questions (course_id, question_text, choice_1, choice_2, "
                     "choice_3, choice_4, correct_choice, ai_explanation, "
                     "ai_explanation_status, ai_explanation_model, ai_explanation_generated_at) "
                     "VALUES (%s, 'TCP는?', 'UDP', '연결형', '비연결', 'IP', 2, %s, 'ready', "
                     "'fake-model', now()) "
                     "RETURNING id", (course, EXPLANATION_MD))
    refused = one(dsn, "INSERT INTO app.questions (course_id, question_text, choice_1, "
                       "choice_2, choice_3, choice_4, correct_choice, ai_explanation_status) "
                       "VALUES (%s, 'OSI 7계층에서 전송 계층은?', '1', '2', '3', '4', 4, 'failed') "
                       "RETURNING id", (course,))
    guard = _job(dsn, "explanation", f"question:{refused}", "failed", "guard_fail",
                 "the model answered 3, the key is 4 (confidence high)",
                 {"answer_choice": 3, "correct_choice": 4, "confidence": "high",
                  "guard": "answer_choice"})
    parse = _job(dsn, "explanation", "question:999999", "failed", "parse_fail",
                 "unusable reply after one retry: not JSON",
                 {"reason": "not JSON", "raw_excerpt": "Sure! The answer is (2)…",
                  "backend": "openai", "model": "fake-model"})
    done = _job(dsn, "explanation", f"question:{ready}", "completed", None, None,
                {"answer_choice": 2, "correct_choice": 2, "confidence": "high",
                 "saved_length": 40})
    sql(dsn, "INSERT INTO queue.attempts (job_id, attempt, worker_id, claim_xid, finished_at, "
             "outcome) VALUES (%s, 1, 'host:42', pg_current_xact_id(), now(), 'completed')",
        (done,))
    sql(dsn, "INSERT INTO queue.model_calls (job_id, kind, call, backend, model, "
             "prompt_tokens, completion_tokens, latency_ms, outcome) VALUES "
             "(%s, 'explanation', 'chat', 'openai', 'fake-model', 812, 143, 2345.5, 'ok')",
        (done,))
    sql(dsn, "INSERT INTO queue.workers (worker_id, kinds, started_at, heartbeat_at) "
             "VALUES ('host:42', '{explanation,embedding}', now(), now())")
    sql(dsn, "SELECT queue.pause('weakness_analysis', 'model upgrade')")
    return {"course": course, "ready": ready, "refused": refused, "guard": guard,
            "parse": parse, "done": done}


def _job(dsn: str, kind: str, subject: str, status: str, code: str | None,
         message: str | None, result: dict[str, Any]) -> int:
    from psycopg.types.json import Jsonb

    payload = {"question_id": int(subject.split(":")[1])}
    job: int = one(dsn, "INSERT INTO queue.jobs (kind, subject, payload, status, attempts, "
                        "error_code, error_message, result, started_at, completed_at) VALUES "
                        "(%s, %s, %s, %s, 1, %s, %s, %s, now(), now()) RETURNING id",
                   (kind, subject, Jsonb(payload), status, code, message, Jsonb(result)))
    return job


def _analysis() -> Any:
    from psycopg.types.json import Jsonb

    entry = {"source": "quiz", "quiz_id": 7, "job_id": None, "analyzed_at": "2026-12-01T09:00Z",
             "prompt_version": 2, "model": "fake-model", "wrong_answers": 3,
             "weaknesses": [{"topic": "전송 계층", "severity": "high",
                             "evidence": "TCP와 UDP를 혼동", "question_ids": []}],
             "suggestions": [{"text": "OSI 계층을 표로 정리하세요", "topics": ["전송 계층"]}]}
    return Jsonb({"weaknesses": entry["weaknesses"], "suggestions": entry["suggestions"],
                  "analyzed_at": entry["analyzed_at"], "history": [entry]})


@pytest.fixture
def seeded(dsn: str) -> dict[str, Any]:
    return seed(dsn)


def dashboard(dsn: str, **settings: Any) -> TestClient:
    values: dict[str, Any] = {"database_url": dsn, "dashboard_token": TOKEN, **settings}
    return TestClient(create_app(load_settings(**values), dsn), base_url=ORIGIN)


@pytest.fixture
def client(dsn: str) -> Iterator[TestClient]:
    with dashboard(dsn) as test_client:
        yield test_client


def sign_in(client: TestClient) -> str:
    """Sign in with the token; this session's CSRF token."""
    response = client.post("/login", data={"token": TOKEN, "next": "/"},
                           headers={"Origin": ORIGIN})
    assert response.status_code == 200, response.text
    return csrf_of(response.text)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)
