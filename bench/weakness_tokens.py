"""Prompt size of one weakness analysis for a course with 1, 10 and 50 earlier analyses.

Run `python -m bench.weakness_tokens`; it prints a markdown table and says what it measured.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from openai import OpenAI
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

from tests.support import fake_openai as fake
from tests.support.inproc import running_worker, until
from worker import logs
from worker.config import Settings, load_settings
from worker.db import check_server, connect, database_url
from worker.kinds import weakness, weakness_store
from worker.migrate import migrate
from worker.models.build import build_client
from worker.registry import Registry

BENCH_DB = "weakness_bench"
PREVIOUS = (1, 10, 50)
TOPICS = [f"{area} {part}" for area in ("변압기", "유도전동기", "동기발전기", "송전선로", "배전",
                                        "회로이론", "전자기학", "제어공학")
          for part in ("손실", "등가회로", "효율 계산", "특성 곡선", "보호 계전")]


def previous_analyses(count: int) -> dict[str, Any]:
    """`count` earlier analyses of three weaknesses and two suggestions each, drawn from a
    pool of 40 topics so that topics recur as they do for a real learner."""
    stored: Any = None
    for n in range(count):
        entry = {
            "source": "quiz", "quiz_id": 100_000 + n, "quiz_kind": "quiz", "job_id": None,
            "analyzed_at": f"2026-01-01T00:{n // 60:02d}:{n % 60:02d}+00:00",
            "prompt_version": 1, "model": "bench", "wrong_answers": 6,
            "weaknesses": [{"topic": TOPICS[(3 * n + k) % len(TOPICS)],
                            "severity": ("high", "medium", "low")[(n + k) % 3],
                            "evidence": f"{n}회차에서 관련 공식을 다른 조건에 적용해 보기를 잘못 "
                                        "고르고, 서술형에서 전제 조건을 빠뜨렸다",
                            "question_ids": [n * 10 + k]} for k in range(3)],
            "suggestions": [{"text": f"{n}회차 오답의 공식을 조건별로 표로 정리하고 비슷한 "
                                     "유형을 다섯 문제 더 풀어 보기", "topics": []}
                            for _ in range(2)],
            "superseded_by_job": None}
        stored, _ = weakness_store.merge(stored, entry)
    return dict(stored)


def _insert(conn: Any, table: str, values: dict[str, Any]) -> int:
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING id").format(
        sql.SQL(table), sql.SQL(", ").join(map(sql.Identifier, values)),
        sql.SQL(", ").join(sql.Placeholder() * len(values)))
    return int(conn.execute(query, list(values.values())).fetchone()["id"])


def graded_quiz(conn: Any, previous: int) -> tuple[int, int]:
    """A course holding `previous` analyses, and a newly graded quiz of 10 wrong answers
    (8 multiple choice, 2 descriptive), the same for every course."""
    user = _insert(conn, "app.users", {"email": f"bench{previous}@example.invalid"})
    course = _insert(conn, "app.courses", {"user_id": user, "title": "전기기사 필기",
                                           "course_weakness_analysis":
                                               Jsonb(previous_analyses(previous))})
    quiz = _insert(conn, "app.quizzes", {"course_id": course, "user_id": user,
                                         "title": "모의 5회", "kind": "mock_exam"})
    for i in range(10):
        descriptive = i >= 8
        question = _insert(conn, "app.questions", {
            "course_id": course,
            "question_type": "descriptive" if descriptive else "multiple_choice",
            "question_text": f"{i + 1}. 3상 변압기의 결선 방식 중 제3고조파 전류가 흐르지 않는 "
                             "경우와 그 이유를 고르시오.",
            **({"reference_answer": "Δ 결선이 있으면 제3고조파 여자 전류가 결선 내부를 "
                                    "순환하므로 선로에 나타나지 않는다.", "max_score": 10}
               if descriptive else
               {"choice_1": "Y-Y 결선", "choice_2": "Δ-Y 결선", "choice_3": "Y-Δ 결선",
                "choice_4": "V-V 결선", "correct_choice": 2}),
            "explanation": "Δ 결선은 제3고조파 전류의 순환 통로가 되어 기전력 파형의 왜곡을 "
                           "막는다. Y-Y 결선은 중성점을 접지하지 않으면 통로가 없다.",
            "subject": "전기기기", "scope": "변압기"})
        _insert(conn, "app.quiz_answers", {
            "quiz_id": quiz, "question_id": question, "is_correct": False,
            **({"answer_text": "Y 결선이라서 고조파가 없다", "score": 3, "max_score": 10}
               if descriptive else {"selected_choice": 1})})
    conn.execute(b"UPDATE app.quizzes SET status = 'graded' WHERE id = %s", (quiz,))
    return course, quiz


def _reply(request: fake.Recorded) -> fake.Reply:
    return fake.chat_json({"weaknesses": [{"topic": "변압기 결선", "severity": "high",
                                           "evidence": "제3고조파 통로를 혼동", "questions": [1]}],
                           "suggestions": [{"text": "결선별 고조파 통로를 표로 정리",
                                            "topics": ["변압기 결선"]}]})


async def _run_jobs(dsn: str, settings: Settings) -> None:
    client = build_client(settings.models, dsn)
    registry = Registry()
    registry.register(weakness.kind(settings, client))
    try:
        async with running_worker(dsn, registry, log_level="warning"):
            def pending() -> int:
                with connect(dsn) as conn:
                    row = conn.execute(b"SELECT count(*) AS n FROM queue.jobs WHERE kind = "
                                       b"'weakness_analysis' AND status = 'pending'").fetchone()
                return int(row["n"]) if row else 0

            async def done() -> bool:
                return await asyncio.to_thread(pending) == 0

            await until(done, within=300, message="analyses finished")
    finally:
        await client.aclose()


def server_prompt_tokens(body: dict[str, Any]) -> tuple[int | None, str]:
    """The prompt_tokens a real server reports for exactly this request body (answered with
    one token, so only the prompt is paid for), and the model that counted them."""
    client = OpenAI(base_url=os.environ["OPENAI_BASE_URL"],
                    api_key=os.environ.get("OPENAI_API_KEY") or "not-needed", max_retries=0)
    model = os.environ.get("WORKER_LLM_MODEL") or str(body["model"])
    extra = {"response_format": body["response_format"]} if "response_format" in body else {}
    reply = client.chat.completions.create(model=model, messages=body["messages"], max_tokens=1,
                                           temperature=0, extra_body=extra)
    return (reply.usage.prompt_tokens if reply.usage else None), reply.model or model


def measure(dsn: str, server: fake.FakeOpenAI, count_tokens: bool) -> list[dict[str, Any]]:
    # the job talks to the fake server, which keeps the exact request; the JSON mode is the
    # one configured (WORKER_LLM_JSON_MODE), so the body is what that server would get
    settings = load_settings(models={"openai_base_url": server.base_url,
                                     "openai_api_key": "bench", "llm_model": "fake-model"})
    rows = []
    for previous in PREVIOUS:
        with connect(dsn, autocommit=True) as conn:
            course, quiz = graded_quiz(conn, previous)
            stored = conn.execute(b"SELECT course_weakness_analysis::text AS a FROM app.courses "
                                  b"WHERE id = %s", (course,)).fetchone()
        before = len(server.requests)
        asyncio.run(_run_jobs(dsn, settings))
        with connect(dsn) as conn:
            job = conn.execute(b"SELECT status, error_code, result FROM queue.jobs WHERE "
                               b"subject = %s", (f"quiz:{quiz}",)).fetchone()
        if job is None or job["status"] != "completed":
            raise SystemExit(f"analysis did not complete: {job}")
        body = server.requests[before].body
        tokens, model = server_prompt_tokens(body) if count_tokens else (None, "")
        rows.append({
            "previous": previous,
            "stored_chars": len(stored["a"]) if stored else 0,
            "summary_topics": job["result"]["summary_topics"],
            "prompt_chars": job["result"]["prompt_chars"],
            "body_bytes": len(json.dumps(body, ensure_ascii=False).encode()),
            "prompt_tokens": tokens, "model": model,
        })
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| earlier analyses | stored course JSON (chars) | topics in the summary | "
             "prompt, system + user (chars) | request body (UTF-8 bytes) | "
             "prompt_tokens reported by a real server |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        tokens = (f"{r['prompt_tokens']:,} ({r['model']})" if r["prompt_tokens"] is not None
                  else "not measured (no OPENAI_BASE_URL)")
        lines.append(f"| {r['previous']} | {r['stored_chars']:,} | {r['summary_topics']} | "
                     f"{r['prompt_chars']:,} | {r['body_bytes']:,} | {tokens} |")
    return "\n".join(lines)


def main() -> None:
    settings = load_settings(poll_interval=0.2, log_level="warning")
    logs.configure(settings.log_format, settings.log_level)
    count_tokens = bool(os.environ.get("OPENAI_BASE_URL"))
    with database_url(settings) as server_dsn:
        dsn = server_dsn
        if settings.database_url is None:
            # a database of its own on the embedded server, fresh on every run
            with connect(server_dsn, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(BENCH_DB)))
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DB)))
            dsn = make_conninfo(server_dsn, dbname=BENCH_DB)
        with connect(dsn) as conn:
            check_server(conn)
            migrate(conn)
            conn.commit()
        with fake.FakeOpenAI() as server:
            server.fallback["chat"] = _reply
            rows = measure(dsn, server, count_tokens)
    print(table(rows))
    print("\nEach row: one new mock exam with 10 wrong answers (8 multiple choice, 2 "
          "descriptive), analysed by the real job kind through the worker, for a course that "
          "already holds that many analyses (3 weaknesses and 2 suggestions each, over a pool "
          f"of {len(TOPICS)} topics). Characters are counted on the messages the job rendered; "
          "the request body is what the job sent to the model server, schema included"
          + (" (WORKER_LLM_JSON_MODE=" + os.environ.get("WORKER_LLM_JSON_MODE", "json_schema")
             + "); that same body was sent to OPENAI_BASE_URL with max_tokens=1 for the token "
             "count." if count_tokens else
             ". Token counts need a real server: set OPENAI_BASE_URL (and OPENAI_API_KEY, "
             "WORKER_LLM_MODEL, WORKER_LLM_JSON_MODE) and run again."))


if __name__ == "__main__":
    main()
