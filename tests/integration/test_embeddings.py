"""Question and chunk embeddings on a real server with the fake model: triggers, batches,
stale input, failures, similarity search and backfill."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from pgvector import Vector
from psycopg import pq
from psycopg.rows import dict_row

from tests.support import fake_openai as fake
from tests.support.db import sql as _sql
from tests.support.inproc import running_worker, until
from tests.support.vectors import DIM, cosine, responder, vector
from worker.config import Settings
from worker.db import aconnect, register_vector_types
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
    settings = Settings(models=ModelSettings(
        OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="test-key", embed_model="fake-embed",
        embed_dim=DIM, embed_input_type=roles, embed_batch_size=32))
    client = build_client(settings.models, dsn)
    registry = Registry()
    registry.register(embedding.kind(settings, client))
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


# -- lock contention with the application ---------------------------------------------------

async def _app_conn(dsn: str) -> psycopg.AsyncConnection[dict[str, Any]]:
    """An application session that holds its row locks until the test commits."""
    return await psycopg.AsyncConnection.connect(dsn, row_factory=dict_row)


async def _claim_waits_on_a_lock(dsn: str) -> bool:
    rows = await asyncio.to_thread(
        _sql, dsn, "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'worker:%%' "
                   "AND wait_event_type = 'Lock'")
    return bool(rows)


def _job_rows(dsn: str, qids: list[int]) -> list[dict[str, Any]]:
    return [_sql(dsn, "SELECT status, attempts, error_code FROM queue.jobs "
                      "WHERE subject = %s ORDER BY id DESC LIMIT 1", (f"question:{q}",))[0]
            for q in qids]


async def _completed(dsn: str, qids: list[int]) -> bool:
    rows = await asyncio.to_thread(_job_rows, dsn, qids)
    return all(r["status"] == "completed" for r in rows)


def test_a_row_the_app_holds_fails_only_its_own_job(dsn: str, model: Any) -> None:
    """The application holds a lock on question 2 of 3: the claim's write of it times out on
    lock_timeout; question 2's job alone is retried (`db_conflict`), 1 and 3 are written."""
    course = _course(dsn)
    qids = [_question(dsn, course, f"{i}번 문제: 변압기의 손실은?") for i in range(3)]

    async def main() -> None:
        app = await _app_conn(dsn)
        await app.execute(b"UPDATE app.questions SET subject = 'lock' WHERE id = %s", (qids[1],))
        async with embedding_worker(dsn, model, statement_timeout_ms=4000,
                                    lock_timeout_ms=300, retry_base=30, retry_cap=30,
                                    concurrency={"embedding": 1}):  # one claim of three
            await until(lambda: _completed(dsn, [qids[0], qids[2]]), within=15,
                        message="the uncontended rows written")
            assert _job_rows(dsn, qids) == [
                {"status": "completed", "attempts": 1, "error_code": None},
                {"status": "pending", "attempts": 1, "error_code": "db_conflict"},
                {"status": "completed", "attempts": 1, "error_code": None}]
            await app.rollback()
            await app.close()
            await _sql_async(dsn, "UPDATE queue.jobs SET run_at = now() WHERE status = 'pending'")
            await until(lambda: _completed(dsn, qids), message="the contended row written")
        assert [r["attempts"] for r in _job_rows(dsn, qids)] == [1, 2, 1]

    asyncio.run(main())
    assert {r["embedding_status"] for r in _sql(
        dsn, "SELECT embedding_status FROM app.questions WHERE id = ANY(%s)", (qids,))} == {
        "ready"}


def test_a_deadlock_with_the_app_fails_only_the_deadlocked_job(dsn: str, model: Any) -> None:
    """The app locks question 3, the claim writes 1 and 2 and waits on 3, the app then asks
    for 1: the server breaks the deadlock in the claim. Only question 3's job is retried."""
    course = _course(dsn)
    qids = [_question(dsn, course, f"{i}번 문제: 전동기의 속도는?") for i in range(3)]

    async def main() -> None:
        app = await _app_conn(dsn)
        # the claim, not the app, is the one that detects the deadlock (superuser setting)
        await app.execute(b"SET deadlock_timeout = '20s'")
        await app.execute(b"UPDATE app.questions SET subject = 'lock' WHERE id = %s", (qids[2],))
        async with embedding_worker(dsn, model, lock_timeout_ms=20_000,
                                    retry_base=30, retry_cap=30,
                                    concurrency={"embedding": 1}):  # one claim of three
            await until(lambda: _claim_waits_on_a_lock(dsn), message="the claim waits on 3")
            # blocks until the claim commits; the claim meanwhile hits the deadlock
            app_write = asyncio.create_task(app.execute(
                b"UPDATE app.questions SET subject = 'lock' WHERE id = %s", (qids[0],)))
            await until(lambda: _completed(dsn, qids[:2]), within=15,
                        message="questions 1 and 2 written")
            await app_write
            await app.commit()
            await app.close()
            assert _job_rows(dsn, qids)[2] == {
                "status": "pending", "attempts": 1, "error_code": "db_conflict"}
            await _sql_async(dsn, "UPDATE queue.jobs SET run_at = now() WHERE status = 'pending'")
            await until(lambda: _completed(dsn, qids), message="question 3 written")

    asyncio.run(main())


def test_a_final_failure_hook_does_not_wait_out_the_statement_timeout(dsn: str, model: Any
                                                                      ) -> None:
    """A job that fails for good marks its row failed; if the app holds that row, the hook
    gives up after lock_timeout and the job's outcome is still recorded, with the batch."""
    course = _course(dsn)
    good = _question(dsn, course, "정상 문제")
    doc = _sql(dsn, "INSERT INTO app.documents (course_id, title) VALUES (%s, 'd') RETURNING id",
               (course,))[0]["id"]
    empty = _sql(dsn, "INSERT INTO app.document_chunks (document_id, chunk_index, content) "
                      "VALUES (%s, 0, '   ') RETURNING id", (doc,))[0]["id"]

    async def main() -> None:
        app = await _app_conn(dsn)
        await app.execute(b"UPDATE app.document_chunks SET chunk_index = 0 WHERE id = %s",
                          (empty,))
        async with embedding_worker(dsn, model, statement_timeout_ms=20_000,
                                    lock_timeout_ms=300, concurrency={"embedding": 1}):
            await until(lambda: _all_finished(dsn), within=10, message="both jobs finished")
        await app.rollback()
        await app.close()

    asyncio.run(main())
    outcome = {r["subject"]: (r["status"], r["attempts"], r["error_code"]) for r in _sql(
        dsn, "SELECT subject, status, attempts, error_code FROM queue.jobs")}
    assert outcome == {f"question:{good}": ("completed", 1, None),
                       f"chunk:{empty}": ("failed", 1, "bad_input")}


async def _sql_async(dsn: str, query: str, params: Any = None) -> list[dict[str, Any]]:
    return await asyncio.to_thread(_sql, dsn, query, params)


def test_pgvector_types_are_registered_only_where_the_extension_exists(
    dsn: str, empty_dsn: str
) -> None:
    """The claim pool's configure hook: a database not migrated yet has no `vector` type and
    is left as it is (idle, nothing registered); a migrated one reads vectors back as
    pgvector.Vector and takes them as parameters."""
    async def main() -> None:
        async with await aconnect(empty_dsn) as conn:
            await register_vector_types(conn)
            assert conn.info.transaction_status == pq.TransactionStatus.IDLE
        async with await aconnect(dsn) as conn:
            await register_vector_types(conn)
            assert conn.info.transaction_status == pq.TransactionStatus.IDLE
            cur = await conn.execute("SELECT %s::vector AS v", (Vector([0.5, 1.0]),))
            assert await cur.fetchone() == {"v": Vector([0.5, 1.0])}

    asyncio.run(main())


@pytest.fixture
def euc_kr_dsn(pg_server: str) -> Iterator[str]:
    """A migrated database whose server encoding is EUC_KR (the worker refuses to start on
    one; the embedding kind must still not loop on it)."""
    from tests.support import db as testdb
    from worker.migrate import migrate

    name = f"k_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'EUC_KR' "
                     "LC_COLLATE 'C' LC_CTYPE 'C'")
    url = testdb.dsn_for(pg_server, name)
    # the migrations are UTF-8 text: sent as such, the server converts them
    with psycopg.connect(url, row_factory=dict_row, client_encoding="UTF8") as conn:
        migrate(conn)
    yield url
    testdb.drop_database(pg_server, name)


def test_on_a_non_utf8_database_a_korean_question_is_embedded_once(
        euc_kr_dsn: str, model: Any) -> None:
    """The fingerprint of the embedded text is computed by the server on both sides of the
    check: a client hashing UTF-8 against a server hashing EUC_KR bytes saw every write as an
    edit and re-embedded at once, forever, without using attempts."""
    # the test's own statements are UTF-8 text; the worker's session keeps the database's
    # encoding as its client encoding
    as_utf8 = psycopg.conninfo.make_conninfo(euc_kr_dsn, client_encoding="UTF8")
    course = _course(as_utf8)
    qid = _question(as_utf8, course, "변압기의 철손은?")

    async def main() -> None:
        async with embedding_worker(euc_kr_dsn, model):
            await until(lambda: _all_finished(as_utf8), within=20)

    asyncio.run(main())
    assert _sql(as_utf8, "SELECT embedding_status FROM app.questions WHERE id = %s",
                (qid,)) == [{"embedding_status": "ready"}]
    attempts = _sql(as_utf8, "SELECT outcome FROM queue.attempts ORDER BY id")
    assert [a["outcome"] for a in attempts] == ["completed"], attempts
    assert len(model.requests) == 1


def test_a_backfill_call_enqueues_at_most_its_budget_and_the_next_call_goes_on(
        dsn: str) -> None:
    _sql(dsn, "UPDATE app.budgets SET value = 3 WHERE name = 'backfill_rows_per_call'")
    course = _course(dsn)
    questions = [_question(dsn, course, f"문제 {n}") for n in range(5)]
    _sql(dsn, "UPDATE queue.jobs SET status = 'completed', completed_at = now()")
    _sql(dsn, "UPDATE app.questions SET embedding_status = 'none'")
    first = _sql(dsn, "SELECT job_id FROM app.backfill_embeddings(%s)", (course,))
    assert len(first) == 3
    second = _sql(dsn, "SELECT job_id FROM app.backfill_embeddings(%s, NULL, 100)", (course,))
    assert len(second) == 3  # capped by the budget, not by the 100 asked for
    subjects = {r["subject"] for r in _sql(
        dsn, "SELECT subject FROM queue.jobs WHERE status = 'pending'")}
    assert subjects == {f"question:{q}" for q in questions}
