"""The privilege matrix: each role logs in and tries what it may and may not do.

`llm_app` writes the app tables and calls the request functions, and holds nothing in the
queue (the triggers enqueue with their owner's rights); `llm_worker` runs jobs and cannot
enqueue, requeue or cancel; `llm_operator` reads the queue and requeues and cancels, and
writes no app table; `llm_dashboard` reads the queue, the courses and questions and calls
the operator functions its buttons stand for. No function in `queue` or `app` is executable
by PUBLIC. The same rows are the table in docs/operations.md.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.reliability.support import login_dsn, one, sql

pytestmark = pytest.mark.chaos

# (role, what it tries, allowed): statements run in a transaction that is rolled back;
# {question}, {quiz}, {job} are rows the admin made for the role to act on
MATRIX: list[tuple[str, str, str, bool]] = [
    ("llm_app", "insert a question (its embedding job is enqueued by the trigger)",
     "INSERT INTO app.questions (course_id, question_text, choice_1, choice_2, choice_3, "
     "choice_4, correct_choice) SELECT course_id, 'q', 'a', 'b', 'c', 'd', 1 "
     "FROM app.questions WHERE id = {question}", True),
    ("llm_app", "edit a question (its embedding and explanation go stale)",
     "UPDATE app.questions SET question_text = 'edited', correct_choice = 3 "
     "WHERE id = {question}", True),
    ("llm_app", "add study material (its chunk's embedding is enqueued)",
     "WITH d AS (INSERT INTO app.documents (course_id, title) SELECT course_id, 'doc' "
     "FROM app.questions WHERE id = {question} RETURNING id) "
     "INSERT INTO app.document_chunks (document_id, chunk_index, content) "
     "SELECT id, 0, 'text' FROM d", True),
    ("llm_app", "grade a quiz (its analysis and explanations are enqueued)",
     "UPDATE app.quizzes SET status = 'graded' WHERE id = {quiz}", True),
    ("llm_app", "request an explanation",
     "SELECT * FROM app.request_explanation({question})", True),
    ("llm_app", "search similar questions", "SELECT * FROM app.similar_questions({question})",
     True),
    ("llm_app", "read the queue", "SELECT * FROM queue.jobs", False),
    ("llm_app", "insert a job", "INSERT INTO queue.jobs (kind) VALUES ('k')", False),
    ("llm_app", "call queue.enqueue", "SELECT queue.enqueue('k', 'any', '{{}}')", False),
    ("llm_app", "requeue a job", "SELECT queue.requeue({job})", False),
    ("llm_app", "cancel a job", "SELECT queue.cancel({job})", False),
    ("llm_app", "backfill embeddings", "SELECT app.backfill_embeddings(NULL, 'x')", False),
    ("llm_worker", "read the jobs", "SELECT * FROM queue.jobs", True),
    ("llm_worker", "call queue.enqueue", "SELECT queue.enqueue('k', 'any', '{{}}')", False),
    ("llm_worker", "insert a job", "INSERT INTO queue.jobs (kind) VALUES ('k')", False),
    ("llm_worker", "requeue a job", "SELECT queue.requeue({job})", False),
    ("llm_worker", "cancel a job", "SELECT queue.cancel({job})", False),
    ("llm_worker", "request an explanation",
     "SELECT * FROM app.request_explanation({question})", False),
    ("llm_worker", "insert a question",
     "INSERT INTO app.questions (course_id, question_text) SELECT course_id, 'q' "
     "FROM app.questions WHERE id = {question}", False),
    ("llm_worker", "claim due jobs", "SELECT * FROM queue.claim('explanation', 1, NULL)", True),
    ("llm_worker", "complete a job it never claimed",
     "UPDATE queue.jobs SET status = 'completed' WHERE id = {job}", False),
    ("llm_worker", "park a job for ever",
     "UPDATE queue.jobs SET run_at = 'infinity' WHERE id = {job}", False),
    ("llm_worker", "close an attempt as released",
     "UPDATE queue.attempts SET outcome = 'released' WHERE job_id = {job}", False),
    ("llm_worker", "insert an attempt row",
     "INSERT INTO queue.attempts (job_id, attempt, worker_id, claim_xid) "
     "VALUES ({job}, 1, 'w', pg_current_xact_id())", False),
    ("llm_worker", "register a ghost worker that beats for ever",
     "INSERT INTO queue.workers (worker_id, kinds, heartbeat_at) "
     "VALUES ('ghost', '{{explanation}}', 'infinity')", False),
    ("llm_worker", "mark a kind as served",
     "INSERT INTO queue.kinds_seen (kind, last_seen_at) VALUES ('x', 'infinity')", False),
    ("llm_worker", "record an attempt for a job without its claim's receipt",
     "SELECT * FROM queue.record_attempts(ARRAY[{job}]::bigint[], ARRAY['forged'], "
     "pg_current_xact_id(), 'w')", False),
    ("llm_worker", "finish a job without its claim's receipt",
     "SELECT * FROM queue.finish_jobs('w', ARRAY[{job}]::bigint[], ARRAY['forged'], "
     "ARRAY[NULL]::bigint[], ARRAY[1], ARRAY['completed'], ARRAY['completed'], "
     "ARRAY[NULL], ARRAY[NULL], ARRAY[0]::float8[], ARRAY[NULL]::jsonb[])", False),
    ("llm_worker", "release an attempt without its claim's receipt",
     "SELECT queue.release_attempts(ARRAY[1]::bigint[], ARRAY['forged'])", False),
    ("llm_operator", "read the queue's statistics", "SELECT * FROM queue.stats", True),
    ("llm_operator", "requeue a job", "SELECT queue.requeue({job})", True),
    ("llm_operator", "cancel a job", "SELECT queue.cancel({job})", True),
    ("llm_operator", "backfill embeddings", "SELECT app.backfill_embeddings(NULL, 'x')", True),
    ("llm_operator", "pause and resume a kind",
     "SELECT queue.pause('embedding'), queue.resume('embedding')", True),
    ("llm_worker", "pause a kind", "SELECT queue.pause('embedding')", False),
    ("llm_operator", "prune finished jobs past retention", "SELECT * FROM queue.prune()", True),
    ("llm_worker", "prune with its own ages", "SELECT * FROM queue.prune(interval '1 hour', "
     "interval '1 hour', interval '1 hour')", False),
    ("llm_app", "prune finished jobs", "SELECT * FROM queue.prune()", False),
    ("llm_app", "pause a kind", "SELECT queue.pause('embedding')", False),
    ("llm_operator", "declare and remove a cron schedule",
     "SELECT queue.schedule('nightly', 'embedding', '0 3 * * *'), "
     "queue.unschedule('nightly')", True),
    ("llm_worker", "declare a cron schedule",
     "SELECT queue.schedule('nightly', 'embedding', '0 3 * * *')", False),
    ("llm_app", "declare a cron schedule",
     "SELECT queue.schedule('nightly', 'embedding', '0 3 * * *')", False),
    ("llm_worker", "fire the due schedules", "SELECT * FROM queue.fire_schedules()", True),
    ("llm_worker", "fire schedules at a time of its choosing",
     "SELECT * FROM queue.fire_schedules('infinity')", False),
    ("llm_worker", "move a schedule's last slot into the future",
     "UPDATE queue.schedules SET last_fired_at = 'infinity'", False),
    ("llm_operator", "insert a question",
     "INSERT INTO app.questions (course_id, question_text) SELECT course_id, 'q' "
     "FROM app.questions WHERE id = {question}", False),
    ("llm_operator", "call queue.enqueue", "SELECT queue.enqueue('k', 'any', '{{}}')", False),
    ("llm_dashboard", "read the jobs, their attempts and live states",
     "SELECT * FROM queue.job_states j LEFT JOIN queue.attempts a ON a.job_id = j.id", True),
    ("llm_dashboard", "read the courses and questions",
     "SELECT c.title, q.ai_explanation FROM app.courses c JOIN app.questions q "
     "ON q.course_id = c.id", True),
    ("llm_dashboard", "read the model usage", "SELECT * FROM queue.model_usage_daily", True),
    ("llm_dashboard", "requeue a job", "SELECT queue.requeue({job})", True),
    ("llm_dashboard", "cancel a job", "SELECT queue.cancel({job})", True),
    ("llm_dashboard", "pause and resume a kind",
     "SELECT queue.pause('embedding'), queue.resume('embedding')", True),
    ("llm_dashboard", "request an explanation",
     "SELECT * FROM app.request_explanation({question}, true)", True),
    ("llm_dashboard", "read the users' e-mail addresses", "SELECT email FROM app.users", False),
    ("llm_dashboard", "read the claim secret", "SELECT * FROM queue.claim_secret", False),
    ("llm_dashboard", "edit a question",
     "UPDATE app.questions SET question_text = 'edited' WHERE id = {question}", False),
    ("llm_dashboard", "call queue.enqueue", "SELECT queue.enqueue('k', 'any', '{{}}')", False),
    ("llm_dashboard", "prune finished jobs", "SELECT * FROM queue.prune()", False),
    ("llm_dashboard", "backfill embeddings", "SELECT app.backfill_embeddings(NULL, 'x')",
     False),
]


def _rows(dsn: str) -> dict[str, int]:
    user = one(dsn, "INSERT INTO app.users (email) VALUES ('matrix@x') RETURNING id")
    course = one(dsn, "INSERT INTO app.courses (user_id, title) VALUES (%s, 'c') RETURNING id",
                 (user,))
    question = one(dsn, "INSERT INTO app.questions (course_id, question_text, choice_1, "
                        "choice_2, choice_3, choice_4, correct_choice) VALUES "
                        "(%s, '문제', '가', '나', '다', '라', 2) RETURNING id", (course,))
    quiz = one(dsn, "INSERT INTO app.quizzes (course_id, user_id, status) VALUES "
                    "(%s, %s, 'submitted') RETURNING id", (course, user))
    one(dsn, "INSERT INTO app.quiz_answers (quiz_id, question_id, selected_choice, "
             "is_correct) VALUES (%s, %s, 3, false) RETURNING id", (quiz, question))
    job = one(dsn, "SELECT id FROM queue.jobs WHERE subject = %s", (f"question:{question}",))
    one(dsn, "UPDATE queue.jobs SET status = 'failed', completed_at = now() "
             "WHERE id = %s RETURNING id", (job,))
    return {"question": question, "quiz": quiz, "job": job}


@pytest.mark.parametrize(("role", "what", "statement", "allowed"), MATRIX,
                         ids=[f"{r}: {w}" for r, w, _, _ in MATRIX])
def test_the_privilege_matrix(dsn: str, role: str, what: str, statement: str,
                              allowed: bool) -> None:
    rows = _rows(dsn)
    login = login_dsn(dsn, role=f"{role}_login", password=f"{role}-pw", member_of=role)
    refused: BaseException | None = None
    with psycopg.connect(login, row_factory=dict_row) as conn:
        try:
            conn.execute(statement.format(**rows).encode())
        except psycopg.errors.InsufficientPrivilege as exc:
            refused = exc
        finally:
            conn.rollback()
    assert (refused is None) == allowed, f"{role} {what}: {refused}"


def test_a_write_by_the_app_role_enqueues_without_any_queue_right(dsn: str) -> None:
    rows = _rows(dsn)
    login = login_dsn(dsn, role="llm_app_login", password="llm_app-pw", member_of="llm_app")
    with psycopg.connect(login, row_factory=dict_row) as conn:
        conn.execute(b"UPDATE app.quizzes SET status = 'graded' WHERE id = %s", (rows["quiz"],))
        question = conn.execute(
            b"INSERT INTO app.questions (course_id, question_text, choice_1, choice_2, "
            b"choice_3, choice_4, correct_choice) SELECT course_id, 'new', 'a', 'b', 'c', 'd', "
            b"1 FROM app.questions WHERE id = %s RETURNING id", (rows["question"],)
        ).fetchone()
        assert question is not None
    kinds = {r["kind"]: r["subject"] for r in sql(
        dsn, "SELECT kind, subject FROM queue.jobs WHERE status = 'pending'")}
    assert kinds["weakness_analysis"] == f"quiz:{rows['quiz']}"
    assert kinds["explanation"] == f"question:{rows['question']}"
    assert any(r["subject"] == f"question:{question['id']}" for r in sql(
        dsn, "SELECT subject FROM queue.jobs WHERE kind = 'embedding'"))


def test_no_queue_or_app_function_is_executable_by_public(dsn: str) -> None:
    public: list[Any] = sql(dsn, """
        SELECT p.oid::regprocedure::text AS function
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname IN ('queue', 'app')
          AND (p.proacl IS NULL OR EXISTS (
                SELECT 1 FROM aclexplode(p.proacl) a
                WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'))""")
    assert public == []


@pytest.mark.parametrize("column", ["priority", "max_attempts"])
def test_priority_and_max_attempts_are_bounded(dsn: str, column: str) -> None:
    value = 32767 if column == "priority" else 2_147_483_647
    with pytest.raises(psycopg.errors.CheckViolation):
        sql(dsn, f"INSERT INTO queue.jobs (kind, {column}) VALUES ('k', {value})")
