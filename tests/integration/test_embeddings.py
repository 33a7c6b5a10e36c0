"""Question and chunk embeddings on a real server with the fake model: triggers, batches,
stale input, failures, similarity search and backfill."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

from tests.support import fake_openai as fake
from tests.support.db import sql as _sql
from tests.support.inproc import running_worker, until
from tests.support.vectors import DIM, cosine, responder, vector
from worker.kinds import embedding
from worker.models.build import build_client
from worker.models.settings import ModelSettings
from worker.registry import Registry

Conn = psycopg.Connection[dict[str, Any]]


def _course(dsn: str) -> int:
    user = _sql(dsn, "INSERT INTO app.users (email) VALUES (gen_random_uuid()::text || '@x') "
                     "RETURNING id")[0]["id"]
    return int(_sql(dsn, "INSERT INTO app.courses (user_id, title) VALUES (%s, '전기기사') "
                         "RETURNING id", (user,))[0]["id"])


def _question(dsn: str, course: int, text: str, choices: tuple[str, ...] = ("가", "나", "다", "라"),
              **extra: Any) -> int:
    columns = ["course_id", "question_text", "choice_1", "choice_2", "choice_3", "choice_4",
               "correct_choice", *extra]
    values = [course, text, *choices, 1, *extra.values()]
    placeholders = ", ".join(["%s"] * len(values))
    return int(_sql(dsn, f"INSERT INTO app.questions ({', '.join(columns)}) "
                         f"VALUES ({placeholders}) RETURNING id", values)[0]["id"])


def _embedding_text(text: str, choices: tuple[str, ...] = ("가", "나", "다", "라")) -> str:
    return f"문제: {text}\n보기:\n" + "\n".join(f"{i}. {c}" for i, c in enumerate(choices, 1))


def _jobs(dsn: str) -> list[dict[str, Any]]:
    return _sql(dsn, "SELECT subject, status FROM queue.jobs WHERE kind = 'embedding' "
                     "ORDER BY id")


@pytest.fixture
def model() -> Iterator[fake.FakeOpenAI]:
    with fake.FakeOpenAI() as server:
        server.fallback["embeddings"] = responder()
        yield server


@contextlib.asynccontextmanager
async def embedding_worker(dsn: str, server: fake.FakeOpenAI, **overrides: Any
                           ) -> AsyncIterator[Any]:
    roles = bool(overrides.pop("roles", False))
    settings = ModelSettings(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="test-key",
                             embed_model="fake-embed", embed_dim=DIM, embed_input_type=roles)
    client = build_client(settings, dsn)
    registry = Registry()
    registry.register(embedding.kind(client, batch_size=32, timeout=5, split_roles=roles))
    try:
        async with running_worker(dsn, registry, **overrides) as worker:
            yield worker
    finally:
        await client.aclose()


async def _all_finished(dsn: str) -> bool:
    rows = await asyncio.to_thread(_sql, dsn, "SELECT count(*) AS n FROM queue.jobs "
                                              "WHERE status = 'pending'")
    return bool(rows[0]["n"] == 0)


def test_which_edits_mark_an_embedding_stale_and_which_do_not(dsn: str) -> None:
    course = _course(dsn)
    qid = _question(dsn, course, "변압기의 철손은?")
    assert _sql(dsn, "SELECT embedding_status FROM app.questions WHERE id = %s", (qid,)) == [
        {"embedding_status": "pending"}]
    assert _jobs(dsn) == [{"subject": f"question:{qid}", "status": "pending"}]
    # pretend it was embedded
    _sql(dsn, "UPDATE queue.jobs SET status = 'completed', completed_at = now()")
    _sql(dsn, "UPDATE app.questions SET embedding = %s::vector, embedding_status = 'ready' "
              "WHERE id = %s", (str(vector("x")), qid))
    for column, value in [("correct_choice", 2), ("explanation", "해설"), ("subject", "전기"),
                          ("scope", "1과목"), ("question_text", "변압기의 철손은?"),
                          ("choice_1", "가")]:
        _sql(dsn, f"UPDATE app.questions SET {column} = %s WHERE id = %s", (value, qid))
        assert _sql(dsn, "SELECT embedding_status FROM app.questions WHERE id = %s",
                    (qid,)) == [{"embedding_status": "ready"}], column
    assert len(_jobs(dsn)) == 1
    for column, value in [("question_text", "변압기의 동손은?"), ("choice_3", "다다")]:
        _sql(dsn, "UPDATE queue.jobs SET status = 'completed', completed_at = now() "
                  "WHERE status = 'pending'")
        _sql(dsn, "UPDATE app.questions SET embedding_status = 'ready' WHERE id = %s", (qid,))
        _sql(dsn, f"UPDATE app.questions SET {column} = %s WHERE id = %s", (value, qid))
        row = _sql(dsn, "SELECT embedding_status, embedding IS NOT NULL AS kept "
                        "FROM app.questions WHERE id = %s", (qid,))[0]
        assert row == {"embedding_status": "stale", "kept": True}, column
        assert _jobs(dsn)[-1] == {"subject": f"question:{qid}", "status": "pending"}
    # chunks follow the same rules for their content
    doc = _sql(dsn, "INSERT INTO app.documents (course_id, title) VALUES (%s, 'd') RETURNING id",
               (course,))[0]["id"]
    chunk = _sql(dsn, "INSERT INTO app.document_chunks (document_id, chunk_index, content) "
                      "VALUES (%s, 0, '철손은 부하와 무관하다') RETURNING id", (doc,))[0]["id"]
    assert _jobs(dsn)[-1] == {"subject": f"chunk:{chunk}", "status": "pending"}


def test_a_batch_of_good_and_bad_rows_is_one_model_call(dsn: str, model: Any) -> None:
    course = _course(dsn)
    texts = [f"전동기 문제 {i}번: 회전자 속도는?" for i in range(6)]
    # all inserted before the worker starts, so one claim takes them together
    good = [_question(dsn, course, t) for t in texts]
    deleted = _question(dsn, course, "삭제될 문제")
    _sql(dsn, "UPDATE app.questions SET deleted_at = now() WHERE id = %s", (deleted,))
    doc = _sql(dsn, "INSERT INTO app.documents (course_id, title) VALUES (%s, 'd') RETURNING id",
               (course,))[0]["id"]
    empty = _sql(dsn, "INSERT INTO app.document_chunks (document_id, chunk_index, content) "
                      "VALUES (%s, 0, '   ') RETURNING id", (doc,))[0]["id"]
    bad = _sql(dsn, "INSERT INTO queue.jobs (kind, subject, payload) VALUES ('embedding', "
                    "'question:x', '{\"source\": \"table\", \"id\": \"drop\"}') "
                    "RETURNING id")[0]["id"]
    missing = _sql(dsn, "SELECT queue.enqueue('embedding', 'question:999999', "
                        "'{\"source\": \"question\", \"id\": 999999}') AS id")[0]["id"]

    async def main() -> None:
        async with embedding_worker(dsn, model):
            await until(lambda: _all_finished(dsn), message="batch finished")

    asyncio.run(main())
    assert len(model.bodies("embeddings")) == 1
    assert model.bodies("embeddings")[0]["input"] == [_embedding_text(t) for t in texts]
    rows = _sql(dsn, "SELECT id, embedding_status, embedding_model, embedding::text AS v "
                     "FROM app.questions WHERE id = ANY(%s) ORDER BY id", (good,))
    assert all(r["embedding_status"] == "ready" and r["embedding_model"] == "fake-embed"
               for r in rows)
    stored = [float(x) for x in rows[0]["v"].strip("[]").split(",")]
    assert cosine(stored, vector(_embedding_text(texts[0]))) > 0.9999
    outcome = {r["subject"]: (r["status"], r["error_code"]) for r in _sql(
        dsn, "SELECT subject, status, error_code FROM queue.jobs WHERE kind = 'embedding'")}
    assert outcome[f"question:{deleted}"] == ("skipped", "deleted") or \
        f"question:{deleted}" not in outcome  # deleted before its job ran, or never enqueued
    assert outcome[f"chunk:{empty}"] == ("failed", "bad_input")
    assert outcome["question:x"] == ("failed", "bad_payload")
    assert outcome["question:999999"] == ("skipped", "missing")
    assert _sql(dsn, "SELECT embedding_status FROM app.document_chunks WHERE id = %s",
                (empty,)) == [{"embedding_status": "failed"}]
    assert bad and missing


def test_an_edit_during_embedding_is_not_published_as_ready(dsn: str, model: Any) -> None:
    course = _course(dsn)
    qid = _question(dsn, course, "처음 문장")
    release = threading.Event()
    embed = responder()

    def held(request: fake.Recorded) -> fake.Reply:
        release.wait(10)  # the test edits the question while this call is in flight
        return embed(request)

    model.script(held, endpoint="embeddings")

    async def main() -> None:
        async with embedding_worker(dsn, model):
            await asyncio.to_thread(model.wait_for_requests, 1)
            await asyncio.to_thread(_sql, dsn, "UPDATE app.questions SET question_text = "
                                               "'고친 문장' WHERE id = %s", (qid,))
            release.set()
            await until(lambda: _all_finished(dsn), message="re-embedded")

    asyncio.run(main())
    inputs = [body["input"] for body in model.bodies("embeddings")]
    assert inputs == [[_embedding_text("처음 문장")], [_embedding_text("고친 문장")]]
    row = _sql(dsn, "SELECT embedding_status, embedding::text AS v FROM app.questions "
                    "WHERE id = %s", (qid,))[0]
    stored = [float(x) for x in row["v"].strip("[]").split(",")]
    assert row["embedding_status"] == "ready"
    assert cosine(stored, vector(_embedding_text("고친 문장"))) > 0.9999
    job = _sql(dsn, "SELECT id, status, attempts FROM queue.jobs WHERE kind = 'embedding'")
    assert [(j["status"], j["attempts"]) for j in job] == [("completed", 1)]
    attempts = _sql(dsn, "SELECT outcome, error_code FROM queue.attempts WHERE job_id = %s "
                         "ORDER BY id", (job[0]["id"],))
    assert attempts == [{"outcome": "superseded", "error_code": "input_changed"},
                        {"outcome": "completed", "error_code": None}]


def test_a_failed_embedding_keeps_the_previous_vector(dsn: str, model: Any) -> None:
    course = _course(dsn)
    qid = _question(dsn, course, "원래 문제")

    async def run() -> None:
        async with embedding_worker(dsn, model):
            await until(lambda: _all_finished(dsn), message="finished")

    asyncio.run(run())
    before = _sql(dsn, "SELECT embedding::text AS v FROM app.questions WHERE id = %s",
                  (qid,))[0]["v"]
    model.fallback["embeddings"] = lambda request: fake.server_error()
    _sql(dsn, "UPDATE app.questions SET question_text = '바뀐 문제' WHERE id = %s", (qid,))
    asyncio.run(run())
    row = _sql(dsn, "SELECT embedding_status, embedding::text AS v FROM app.questions "
                    "WHERE id = %s", (qid,))[0]
    assert row == {"embedding_status": "failed", "v": before}
    last = _sql(dsn, "SELECT status, attempts, error_code FROM queue.jobs "
                     "WHERE kind = 'embedding' ORDER BY id DESC LIMIT 1")[0]
    assert last == {"status": "failed", "attempts": 2, "error_code": "server_error"}


def test_similar_questions_and_duplicates_in_cosine_order(dsn: str, model: Any) -> None:
    course, other = _course(dsn), _course(dsn)
    texts = ["변압기 철손과 동손의 차이", "변압기 철손의 원인", "변압기 동손의 계산",
             "유도전동기 슬립의 정의", "송전선로 코로나 현상"]
    ids = [_question(dsn, course, t) for t in texts]
    twin = _question(dsn, course, texts[0])
    elsewhere = _question(dsn, other, texts[0])
    gone = _question(dsn, course, texts[0] + "!")

    async def main() -> None:
        async with embedding_worker(dsn, model):
            await until(lambda: _all_finished(dsn), message="embedded")

    asyncio.run(main())
    _sql(dsn, "UPDATE app.questions SET deleted_at = now() WHERE id = %s", (gone,))
    got = _sql(dsn, "SELECT question_id, similarity FROM app.similar_questions(%s, 4)",
               (ids[0],))
    base = vector(_embedding_text(texts[0]))
    candidates = {i: cosine(base, vector(_embedding_text(t))) for i, t in
                  zip([*ids[1:], twin], [*texts[1:], texts[0]], strict=True)}
    expected = sorted(candidates, key=lambda i: -candidates[i])[:4]
    assert [r["question_id"] for r in got] == expected
    assert all(abs(r["similarity"] - candidates[r["question_id"]]) < 1e-4 for r in got)
    assert elsewhere not in [r["question_id"] for r in got]
    dups = _sql(dsn, "SELECT question_id FROM app.duplicate_questions(%s, 0.99)", (ids[0],))
    assert dups == [{"question_id": twin}]


def test_backfill_is_idempotent(dsn: str, model: Any) -> None:
    course = _course(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # rows from before the triggers
        for i in range(5):
            conn.execute("INSERT INTO app.questions (course_id, question_text) VALUES (%s, %s)",
                         (course, f"옛 문제 {i}"))
    assert _jobs(dsn) == []
    first = _sql(dsn, "SELECT job_id FROM app.backfill_embeddings(%s)", (course,))
    again = _sql(dsn, "SELECT job_id FROM app.backfill_embeddings(%s)", (course,))
    assert len(first) == 5 and sorted(map(str, first)) == sorted(map(str, again))
    assert len(_jobs(dsn)) == 5

    async def main() -> None:
        async with embedding_worker(dsn, model):
            await until(lambda: _all_finished(dsn), message="backfilled")

    asyncio.run(main())
    assert _sql(dsn, "SELECT count(*) AS n FROM app.questions WHERE embedding_status = 'ready'"
                ) == [{"n": 5}]
    assert _sql(dsn, "SELECT job_id FROM app.backfill_embeddings(%s)", (course,)) == []
    # a new model re-embeds everything once
    assert len(_sql(dsn, "SELECT job_id FROM app.backfill_embeddings(%s, 'bge-m3')",
                    (course,))) == 5


def test_e5_roles_embed_questions_as_queries_and_chunks_as_passages(dsn: str, model: Any
                                                                   ) -> None:
    course = _course(dsn)
    qid = _question(dsn, course, "변압기 효율 조건")
    doc = _sql(dsn, "INSERT INTO app.documents (course_id, title) VALUES (%s, 'd') RETURNING id",
               (course,))[0]["id"]
    _sql(dsn, "INSERT INTO app.document_chunks (document_id, chunk_index, content) "
              "VALUES (%s, 0, '효율은 철손과 동손이 같을 때 최대')", (doc,))

    async def main() -> None:
        async with embedding_worker(dsn, model, roles=True):
            await until(lambda: _all_finished(dsn), message="embedded")

    asyncio.run(main())
    bodies = sorted(model.bodies("embeddings"), key=lambda b: b["input_type"])
    assert [(b["input_type"], len(b["input"])) for b in bodies] == [("passage", 1), ("query", 1)]
    assert bodies[1]["input"] == [_embedding_text("변압기 효율 조건")]
    assert _sql(dsn, "SELECT embedding_status FROM app.questions WHERE id = %s", (qid,)) == [
        {"embedding_status": "ready"}]
