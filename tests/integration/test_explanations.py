"""Explanations on a real server with the fake model: guard, stale input, evidence, cache
states, the manual request under concurrency, and the prefetch on grading."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support import fake_openai as fake
from tests.support.db import one as _one
from tests.support.db import sql as _sql
from tests.support.inproc import running_worker, until
from tests.support.vectors import responder, vector
from worker.config import RerankSettings, Settings
from worker.kinds import explanation
from worker.models.build import build_client
from worker.models.settings import ModelSettings
from worker.registry import Registry

CHOICES = ("철손이 증가한다", "동손이 증가한다", "효율이 최대가 된다", "역률이 0이 된다")


def _vec(text: str) -> str:
    return json.dumps(vector(text))


class Course:
    """A course with study material whose chunks already have vectors."""

    def __init__(self, dsn: str, material: bool = True) -> None:
        self.dsn = dsn
        user = _one(dsn, "INSERT INTO app.users (email) VALUES (gen_random_uuid()::text) "
                         "RETURNING id")
        self.user = user
        self.id = _one(dsn, "INSERT INTO app.courses (user_id, title) VALUES (%s, '전기기사') "
                            "RETURNING id", (user,))
        if material:
            doc = _one(dsn, "INSERT INTO app.documents (course_id, title, ai_summary) VALUES "
                            "(%s, '변압기', '변압기의 손실과 효율을 다룬다') RETURNING id",
                       (self.id,))
            for i, text in enumerate(["변압기의 효율은 철손과 동손이 같을 때 최대가 된다.",
                                      "철손은 부하와 무관하고 동손은 부하의 제곱에 비례한다.",
                                      "송전선로의 코로나 현상은 고전압에서 생긴다."]):
                self.chunk(doc, i, text)

    def chunk(self, doc: int, index: int, text: str) -> int:
        cid = _one(self.dsn, "INSERT INTO app.document_chunks (document_id, chunk_index, "
                             "content) VALUES (%s, %s, %s) RETURNING id", (doc, index, text))
        _sql(self.dsn, "UPDATE app.document_chunks SET embedding = %s::vector, "
                       "embedding_status = 'ready' WHERE id = %s", (_vec(text), cid))
        return cid

    def question(self, text: str = "변압기의 효율이 최대가 되는 조건은?", key: int = 3,
                 choices: tuple[str | None, ...] = CHOICES, **extra: Any) -> int:
        cols = ["course_id", "question_text", "choice_1", "choice_2", "choice_3", "choice_4",
                "correct_choice", *extra]
        vals = [self.id, text, *choices, key, *extra.values()]
        qid = int(_one(self.dsn, f"INSERT INTO app.questions ({', '.join(cols)}) VALUES "
                                 f"({', '.join(['%s'] * len(vals))}) RETURNING id", vals))
        _sql(self.dsn, "UPDATE app.questions SET embedding = %s::vector, "
                       "embedding_status = 'ready' WHERE id = %s", (_vec(text), qid))
        return qid


def _envelope(choice: int, text: str = "효율은 철손과 동손이 같을 때 최대입니다. [자료 1]",
              confidence: str = "high") -> fake.Reply:
    return fake.chat_json({"answer_choice": choice, "explanation_md": text,
                           "confidence": confidence})


@pytest.fixture
def model() -> Iterator[fake.FakeOpenAI]:
    with fake.FakeOpenAI() as server:
        server.fallback["embeddings"] = responder()
        yield server


@contextlib.asynccontextmanager
async def explaining(dsn: str, server: fake.FakeOpenAI,
                     rerank: RerankSettings | None = None, **overrides: Any
                     ) -> AsyncIterator[Any]:
    settings = Settings(
        models=ModelSettings(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="test-key",
                             llm_model="fake-model", llm_json_mode="json_schema"),
        rerank=rerank or RerankSettings(), **overrides)
    client = build_client(settings.models, dsn)
    registry = Registry()
    registry.register(explanation.kind(settings, client))
    try:
        async with running_worker(dsn, registry) as worker:
            yield worker
    finally:
        await client.aclose()


def _drain(dsn: str, server: fake.FakeOpenAI, rerank: RerankSettings | None = None,
           **overrides: Any) -> None:
    async def main() -> None:
        async with explaining(dsn, server, rerank, **overrides):
            await until(lambda: asyncio.to_thread(_idle, dsn), message="queue drained")

    asyncio.run(main())


def _idle(dsn: str) -> bool:
    return bool(_one(dsn, "SELECT count(*) = 0 FROM queue.jobs WHERE status = 'pending' "
                          "AND kind = 'explanation'"))


def _request(dsn: str, qid: int, regenerate: bool = False) -> dict[str, Any]:
    return _sql(dsn, "SELECT * FROM app.request_explanation(%s, %s)", (qid, regenerate))[0]


def _question(dsn: str, qid: int) -> dict[str, Any]:
    return _sql(dsn, "SELECT ai_explanation, ai_explanation_status, ai_explanation_model "
                     "FROM app.questions WHERE id = %s", (qid,))[0]


def _job(dsn: str, qid: int) -> dict[str, Any]:
    return _sql(dsn, "SELECT * FROM queue.jobs WHERE kind = 'explanation' AND subject = %s "
                     "ORDER BY id DESC LIMIT 1", (f"question:{qid}",))[0]


def test_guard_pass_writes_a_ready_explanation_grounded_in_evidence(dsn: str, model: Any
                                                                    ) -> None:
    course = Course(dsn)
    other = course.question("철손과 동손의 관계는?", key=1)
    _sql(dsn, "UPDATE app.questions SET ai_explanation = '다른 문제의 해설', "
              "ai_explanation_status = 'ready' WHERE id = %s", (other,))
    unready = course.question("변압기의 효율 조건은 무엇인가?", key=2)
    _sql(dsn, "UPDATE app.questions SET ai_explanation = '검증되지 않은 해설', "
              "ai_explanation_status = 'stale' WHERE id = %s", (unready,))
    qid = course.question()
    assert _request(dsn, qid)["status"] == "pending"
    model.script(_envelope(3))
    _drain(dsn, model)
    row = _question(dsn, qid)
    assert row["ai_explanation_status"] == "ready" and row["ai_explanation_model"] == "fake-model"
    assert row["ai_explanation"].startswith("효율은 철손과 동손이 같을 때")
    job = _job(dsn, qid)
    assert job["status"] == "completed"
    result = job["result"]
    assert result["confidence"] == "high" and result["capped"] is False
    assert result["original_length"] == result["saved_length"] == len(row["ai_explanation"])
    assert result["evidence"]["reranker"] == "vector"
    assert [e["type"] for e in result["evidence"]["questions"]] == ["question"]
    assert result["evidence"]["questions"][0]["id"] == other
    prompt = model.bodies("chat")[0]["messages"][1]["content"]
    assert "효율은 철손과 동손이 같을 때 최대가 된다" in prompt  # the nearest chunk
    assert "다른 문제의 해설" in prompt
    # another question's AI explanation is marked as such
    assert "관련 문제와 그 AI 해설, 검증되지 않음" in prompt
    assert "AI 해설: 다른 문제의 해설" in prompt
    assert "검증되지 않은 해설" not in prompt  # a stale explanation is never evidence
    assert "[정답]\n3번" in prompt  # the default prompt (v2) gives the key
    assert model.bodies("chat")[0]["messages"][0]["content"].count("정답") >= 1


def test_guard_fail_is_final_and_keeps_the_previous_text(dsn: str, model: Any) -> None:
    course = Course(dsn)
    qid = course.question(key=3)
    _sql(dsn, "UPDATE app.questions SET ai_explanation = '예전 해설', "
              "ai_explanation_status = 'stale' WHERE id = %s", (qid,))
    _request(dsn, qid, regenerate=True)
    model.script(_envelope(2, confidence="medium"))
    _drain(dsn, model)
    assert _question(dsn, qid)["ai_explanation"] == "예전 해설"
    assert _question(dsn, qid)["ai_explanation_status"] == "failed"
    job = _job(dsn, qid)
    assert (job["status"], job["error_code"], job["attempts"]) == ("failed", "guard_fail", 1)
    assert "answered 2, the key is 3" in job["error_message"]
    assert job["result"]["answer_choice"] == 2 and job["result"]["confidence"] == "medium"
    assert len(model.bodies("chat")) == 1  # no retry
    # and the prefetch will not try it again automatically
    assert _one(dsn, "SELECT app.explanation_gave_up(%s)", (qid,)) is True


def test_an_edit_during_generation_is_never_published_for_the_old_content(
    dsn: str, model: Any
) -> None:
    course = Course(dsn)
    qid = course.question(key=3)
    _request(dsn, qid)
    release = threading.Event()

    def held(request: fake.Recorded) -> fake.Reply:
        release.wait(10)
        return _envelope(3, "옛 정답 3번 기준 해설")

    model.script(held, _envelope(4, "새 정답 4번 기준 해설"))

    async def main() -> None:
        async with explaining(dsn, model):
            await asyncio.to_thread(model.wait_for_requests, 1)
            await asyncio.to_thread(_sql, dsn, "UPDATE app.questions SET correct_choice = 4 "
                                               "WHERE id = %s", (qid,))
            release.set()
            await until(lambda: asyncio.to_thread(_idle, dsn), message="re-explained")

    asyncio.run(main())
    row = _question(dsn, qid)
    assert row["ai_explanation_status"] == "ready"
    assert row["ai_explanation"] == "새 정답 4번 기준 해설"
    attempts = _sql(dsn, "SELECT outcome FROM queue.attempts WHERE job_id = %s ORDER BY id",
                    (_job(dsn, qid)["id"],))
    assert [a["outcome"] for a in attempts] == ["superseded", "completed"]


def test_no_evidence_means_skipped_without_a_model_call(dsn: str, model: Any) -> None:
    course = Course(dsn, material=False)
    qid = course.question()
    _request(dsn, qid)
    _drain(dsn, model)
    assert model.bodies("chat") == []
    assert _question(dsn, qid)["ai_explanation_status"] == "skipped"
    job = _job(dsn, qid)
    assert (job["status"], job["error_code"]) == ("skipped", "evidence_missing")


def test_deleted_and_already_ready_questions_need_no_model_call(dsn: str, model: Any) -> None:
    course = Course(dsn)
    gone = course.question()
    _request(dsn, gone)
    _sql(dsn, "UPDATE app.questions SET deleted_at = now() WHERE id = %s", (gone,))
    ready = course.question("이미 해설이 있는 문제")
    _sql(dsn, "UPDATE app.questions SET ai_explanation = '있음', ai_explanation_status = "
              "'ready' WHERE id = %s", (ready,))
    _sql(dsn, "SELECT queue.enqueue('explanation', %s, %s::jsonb)",
         (f"question:{ready}", json.dumps({"question_id": ready})))
    _drain(dsn, model)
    assert model.bodies("chat") == []
    assert (_job(dsn, gone)["status"], _job(dsn, gone)["error_code"]) == ("skipped", "deleted")
    assert _job(dsn, ready)["status"] == "completed"
    assert _job(dsn, ready)["result"]["cached"] is True


def test_bad_input_fails_clearly_and_disturbs_nothing_else(dsn: str, model: Any) -> None:
    course = Course(dsn)
    blank = course.question(choices=("가", "", None, "라"))
    fine = course.question("정상 문제", key=3)
    for qid in (blank, fine):
        _request(dsn, qid)
    model.script(_envelope(3))
    _drain(dsn, model)
    job = _job(dsn, blank)
    assert (job["status"], job["error_code"]) == ("failed", "bad_input")
    assert "choice(s) 2, 3 are empty" in job["error_message"]
    assert _question(dsn, blank)["ai_explanation_status"] == "failed"
    assert _question(dsn, fine)["ai_explanation_status"] == "ready"


def test_unparseable_replies_keep_the_raw_reply_and_fail_after_retries(dsn: str, model: Any
                                                                       ) -> None:
    course = Course(dsn)
    qid = course.question()
    _request(dsn, qid)
    model.script(*[fake.chat("I think the answer is three, because...")] * 4)
    _drain(dsn, model)
    job = _job(dsn, qid)
    assert (job["status"], job["error_code"], job["attempts"]) == ("failed", "parse_fail", 2)
    assert job["result"]["raw_excerpt"].startswith("I think the answer is three")
    assert job["result"]["reason"]
    assert _question(dsn, qid)["ai_explanation_status"] == "failed"


def test_a_long_explanation_is_capped_and_the_lengths_are_kept(dsn: str, model: Any) -> None:
    course = Course(dsn)
    qid = course.question()
    _request(dsn, qid)
    model.script(_envelope(3, "철손과 동손이 같을 때 효율이 최대입니다. " * 100))
    _drain(dsn, model)
    text = _question(dsn, qid)["ai_explanation"]
    result = _job(dsn, qid)["result"]
    assert len(text) <= 1200 and text.endswith("다.…")
    assert result["capped"] is True and result["saved_length"] == len(text)
    assert result["original_length"] > 2000


def test_a_configured_reranker_orders_the_evidence_and_is_recorded(dsn: str, model: Any
                                                                   ) -> None:
    course = Course(dsn)
    qid = course.question()
    _request(dsn, qid)

    def rerank(request: fake.Recorded) -> fake.Reply:
        docs = request.body["documents"]
        # prefer anything about corona, i.e. the opposite of vector order
        scores = [1.0 if "코로나" in d else 0.1 for d in docs]
        return fake.Reply(body={"results": [{"index": i, "relevance_score": s}
                                            for i, s in enumerate(scores)]})

    model.fallback["rerank"] = rerank
    model.script(_envelope(3))
    _drain(dsn, model, RerankSettings(base_url=model.base_url, model="fake-reranker",
                                      api_key="k", timeout=5))
    result = _job(dsn, qid)["result"]
    assert result["evidence"]["reranker"] == "rerank:fake-reranker"
    prompt = model.bodies("chat")[0]["messages"][1]["content"]
    assert prompt.index("코로나") < prompt.index("철손은 부하와 무관")


def test_concurrent_manual_requests_enqueue_once_and_all_get_its_id(dsn: str) -> None:
    course = Course(dsn)
    qid = course.question()
    n = 10
    barrier = threading.Barrier(n)
    outcomes: list[str] = []

    def call() -> None:
        with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
            barrier.wait()
            try:
                row = conn.execute("SELECT * FROM app.request_explanation(%s)", (qid,)
                                   ).fetchone()
                outcomes.append(f"enqueued:{row['job_id']}" if row else "none")
            except psycopg.errors.ObjectInUse:
                outcomes.append("409")

    threads = [threading.Thread(target=call) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    job = _one(dsn, "SELECT id FROM queue.jobs WHERE kind = 'explanation'")
    # the job is only queued (no worker runs here): every caller is told its id
    assert outcomes == [f"enqueued:{job}"] * n
    assert _one(dsn, "SELECT count(*) FROM queue.jobs WHERE kind = 'explanation'") == 1


def test_manual_request_returns_the_cache_without_a_job(dsn: str) -> None:
    course = Course(dsn)
    qid = course.question()
    _sql(dsn, "UPDATE app.questions SET ai_explanation = '캐시된 해설', "
              "ai_explanation_status = 'ready' WHERE id = %s", (qid,))
    assert _request(dsn, qid) == {"status": "ready", "explanation": "캐시된 해설",
                                  "is_stale": False, "job_id": None}
    _sql(dsn, "UPDATE app.questions SET choice_1 = '바뀐 보기' WHERE id = %s", (qid,))
    stale = _request(dsn, qid)
    assert (stale["status"], stale["is_stale"], stale["job_id"]) == ("stale", True, None)
    regen = _request(dsn, qid, regenerate=True)
    assert regen["status"] == "pending" and regen["job_id"] is not None
    assert regen["explanation"] == "캐시된 해설"  # the previous text, shown while it regenerates
    with pytest.raises(psycopg.errors.NoDataFound):
        _request(dsn, 999_999)


def _graded_quiz(dsn: str, course: Course, answers: list[tuple[int, bool | None, bool]]) -> int:
    quiz = _one(dsn, "INSERT INTO app.quizzes (course_id, user_id, kind) VALUES (%s, %s, "
                     "'mock_exam') RETURNING id", (course.id, course.user))
    for qid, correct, unsure in answers:
        _sql(dsn, "INSERT INTO app.quiz_answers (quiz_id, question_id, selected_choice, "
                  "is_correct, unsure) VALUES (%s, %s, 1, %s, %s)", (quiz, qid, correct, unsure))
    _sql(dsn, "UPDATE app.quizzes SET status = 'graded', graded_at = now() WHERE id = %s",
         (quiz,))
    return int(quiz)


def _enqueued(dsn: str) -> list[int]:
    return [int(r["subject"].split(":")[1]) for r in _sql(
        dsn, "SELECT subject FROM queue.jobs WHERE kind = 'explanation' AND status = 'pending' "
             "ORDER BY id")]


def test_prefetch_takes_wrong_and_unsure_questions_that_need_an_explanation(dsn: str) -> None:
    course = Course(dsn)
    wrong, unsure, right = course.question("틀린 문제"), course.question("헷갈린 문제"), \
        course.question("맞힌 문제")
    ready, failed, stale = (course.question(t) for t in ("해설 있음", "실패했던 문제", "낡은 해설"))
    _sql(dsn, "UPDATE app.questions SET ai_explanation = 'x', ai_explanation_status = 'ready' "
              "WHERE id = %s", (ready,))
    _sql(dsn, "UPDATE app.questions SET ai_explanation_status = 'failed' WHERE id = %s",
         (failed,))
    _sql(dsn, "UPDATE app.questions SET ai_explanation = 'x', ai_explanation_status = 'stale' "
              "WHERE id = %s", (stale,))
    guarded, no_evidence = course.question("가드 실패"), course.question("근거 없음")
    for qid, code in ((guarded, "guard_fail"), (no_evidence, "evidence_missing")):
        _sql(dsn, "INSERT INTO queue.jobs (kind, subject, status, error_code, completed_at) "
                  "VALUES ('explanation', %s, 'failed', %s, now())", (f"question:{qid}", code))
        _sql(dsn, "UPDATE app.questions SET ai_explanation_status = 'failed' WHERE id = %s",
             (qid,))
    descriptive = int(_one(dsn, "INSERT INTO app.questions (course_id, question_type, "
                                "question_text, reference_answer) VALUES (%s, 'descriptive', "
                                "'서술형', '모범답안') RETURNING id", (course.id,)))
    gone = course.question("삭제된 문제")
    _sql(dsn, "UPDATE app.questions SET deleted_at = now() WHERE id = %s", (gone,))
    _graded_quiz(dsn, course, [(wrong, False, False), (unsure, True, True), (right, True, False),
                               (ready, False, False), (failed, False, False),
                               (stale, False, False), (guarded, False, False),
                               (no_evidence, False, True), (descriptive, False, False),
                               (gone, False, False)])
    assert sorted(_enqueued(dsn)) == sorted([wrong, failed, unsure])
    assert _enqueued(dsn)[-1] == unsure  # wrong answers first
    statuses = {r["id"]: r["ai_explanation_status"] for r in _sql(
        dsn, "SELECT id, ai_explanation_status FROM app.questions")}
    assert statuses[wrong] == statuses[unsure] == statuses[failed] == "pending"
    assert statuses[right] == "none" and statuses[stale] == "stale"


def test_prefetch_is_capped_at_30_and_grading_twice_enqueues_nothing_more(dsn: str) -> None:
    course = Course(dsn)
    questions = [course.question(f"문제 {i}") for i in range(40)]
    quiz = _graded_quiz(dsn, course, [(qid, False, False) for qid in questions])
    assert _enqueued(dsn) == questions[:30]
    _sql(dsn, "UPDATE app.quizzes SET status = 'graded' WHERE id = %s", (quiz,))
    assert len(_enqueued(dsn)) == 30


def test_a_failing_prefetch_never_breaks_grading(dsn: str) -> None:
    course = Course(dsn)
    qid = course.question()
    _sql(dsn, """
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'queue is broken'; END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON queue.jobs FOR EACH ROW
            WHEN (NEW.kind = 'explanation') EXECUTE FUNCTION refuse();
    """)
    quiz = _graded_quiz(dsn, course, [(qid, False, False)])
    assert _one(dsn, "SELECT status FROM app.quizzes WHERE id = %s", (quiz,)) == "graded"
    assert _enqueued(dsn) == []
    # the prefetch's own writes rolled back with it: the question is not left pending
    assert _question(dsn, qid)["ai_explanation_status"] == "none"


def test_the_content_fingerprint_cannot_be_fooled_by_a_separator_in_the_text(dsn: str) -> None:
    """Moving text across a field boundary is an edit: the fingerprint must change even when
    the text itself holds the character a naive join would separate fields with."""
    with psycopg.connect(dsn) as conn:
        pairs = [
            (("Q", "A\x1fB", "c", "d", "e", 1), ("Q\x1fA", "B", "c", "d", "e", 1)),
            (("Q", "", "c", "d", "e", 1), ("Q", None, "c", "d", "e", 1)),
            (("Q", "c", "d", "e", "f", 1), ("Q", "c", "d", "e", "f", 2)),
        ]
        for left, right in pairs:
            a, b = conn.execute(
                "SELECT app.question_content_md5(%s, %s, %s, %s, %s, %s::smallint), "
                "app.question_content_md5(%s, %s, %s, %s, %s, %s::smallint)",
                (*left, *right)).fetchone() or (None, None)
            assert a != b, (left, right)


def test_huge_titles_and_question_text_are_clipped_and_the_prompt_stays_bounded(
        dsn: str, model: fake.FakeOpenAI) -> None:
    """A 1,000,000-character document title made every explanation prompt of its course
    two million characters; every value that enters the prompt is clipped."""
    course = Course(dsn, material=False)
    huge = "가" * 1_000_000
    doc = _one(dsn, "INSERT INTO app.documents (course_id, title, ai_summary) VALUES "
                    "(%s, %s, '변압기의 손실과 효율') RETURNING id", (course.id, huge))
    course.chunk(doc, 0, "변압기의 효율은 철손과 동손이 같을 때 최대가 된다.")
    qid = course.question(text="변압기의 효율이 최대가 되는 조건은? " + "나" * 200_000,
                          choices=tuple(c + "다" * 100_000 for c in CHOICES))
    model.fallback["chat"] = lambda request: _envelope(3)
    _request(dsn, qid)
    _drain(dsn, model)
    (chat,) = [r for r in model.requests if r.endpoint == "chat"]
    prompt = sum(len(m["content"]) for m in chat.body["messages"])
    assert prompt < explanation.DEFAULT_BUDGET.prompt_chars, prompt
    row = _sql(dsn, "SELECT ai_explanation_status FROM app.questions WHERE id = %s", (qid,))
    assert row == [{"ai_explanation_status": "ready"}]


def test_an_explanation_is_stored_without_images_html_or_links(
        dsn: str, model: fake.FakeOpenAI) -> None:
    """A reply with the key in answer_choice that embeds a tracking image, raw HTML and a
    link was stored `ready` as it was, and then quoted as evidence in the next prompt."""
    course = Course(dsn)
    qid = course.question()
    model.fallback["chat"] = lambda request: _envelope(
        3, "효율은 철손과 동손이 같을 때 최대입니다. [자료 1]\n"
           "![x](https://attacker.example/p.png?d=1) <img src=x onerror=alert(1)> "
           "[더 보기](https://evil.example/x)")
    _request(dsn, qid)
    _drain(dsn, model)
    row = _sql(dsn, "SELECT ai_explanation_status, ai_explanation FROM app.questions "
                    "WHERE id = %s", (qid,))[0]
    assert row["ai_explanation_status"] == "ready"
    text = row["ai_explanation"]
    assert "attacker" not in text and "onerror" not in text and "evil" not in text
    assert "더 보기" in text and "[자료 1]" in text
    job = _sql(dsn, "SELECT result FROM queue.jobs WHERE kind = 'explanation'")[0]
    assert job["result"]["removed"] == ["image", "link", "html"]


def test_a_text_that_argues_for_another_choice_is_refused(
        dsn: str, model: fake.FakeOpenAI) -> None:
    """answer_choice names the key (3) but the text says the answer is 1: guard_fail."""
    course = Course(dsn)
    qid = course.question(key=3)
    model.fallback["chat"] = lambda request: _envelope(
        3, "정답은 1번입니다. 철손이 동손의 2배일 때 효율이 최대가 됩니다.")
    _request(dsn, qid)
    _drain(dsn, model)
    job = _sql(dsn, "SELECT status, error_code, error_message FROM queue.jobs "
                    "WHERE kind = 'explanation'")[0]
    assert (job["status"], job["error_code"]) == ("failed", "guard_fail")
    assert "names choice 1 as the answer" in job["error_message"]
    assert _sql(dsn, "SELECT ai_explanation FROM app.questions WHERE id = %s",
                (qid,)) == [{"ai_explanation": None}]


def test_prompt_v1_stays_selectable_and_solves_blind(dsn: str, model: fake.FakeOpenAI) -> None:
    """PROMPT_VERSION_EXPLANATION=1: the key is not in the prompt; the guard refuses a
    disagreement, as v1 always did."""
    from worker.config import PromptSettings

    course = Course(dsn)
    qid = course.question(key=3)
    model.fallback["chat"] = lambda request: _envelope(2)
    _request(dsn, qid)
    _drain(dsn, model, prompts=PromptSettings(per_kind={"explanation": "1"}))
    body = model.bodies("chat")[0]
    assert "[정답]" not in body["messages"][1]["content"]
    job = _job(dsn, qid)
    assert (job["status"], job["error_code"]) == ("failed", "guard_fail")
    assert job["result"]["prompt_version"] == 1


def test_a_request_promotes_a_queued_prefetch_and_is_refused_only_while_it_runs(
        dsn: str) -> None:
    """Grading queues the wrong answers' explanations (priority 0); a learner asking for one
    of them is not refused (it used to get 55006 until the prefetch ran): the queued job is
    raised to the manual priority and made due now. Only a job a worker holds is refused,
    at once, without waiting for the claim."""
    course = Course(dsn)
    qid = course.question(key=3)
    user = _one(dsn, "SELECT user_id FROM app.courses WHERE id = %s", (course.id,))
    quiz = _one(dsn, "INSERT INTO app.quizzes (course_id, user_id, status) VALUES "
                     "(%s, %s, 'submitted') RETURNING id", (course.id, user))
    _sql(dsn, "INSERT INTO app.quiz_answers (quiz_id, question_id, selected_choice, "
              "is_correct) VALUES (%s, %s, 1, false)", (quiz, qid))
    _sql(dsn, "UPDATE app.quizzes SET status = 'graded' WHERE id = %s", (quiz,))
    prefetch = _sql(dsn, "SELECT id, priority FROM queue.jobs WHERE kind = 'explanation'")
    assert [p["priority"] for p in prefetch] == [0]
    _sql(dsn, "UPDATE queue.jobs SET run_at = now() + interval '1 hour' WHERE id = %s",
         (prefetch[0]["id"],))  # a retry waiting out its backoff, say

    answer = _request(dsn, qid)
    assert (answer["status"], answer["job_id"]) == ("pending", prefetch[0]["id"])
    job = _sql(dsn, "SELECT priority, run_at <= now() AS due FROM queue.jobs WHERE id = %s",
               (prefetch[0]["id"],))[0]
    assert job == {"priority": 10, "due": True}

    with psycopg.connect(dsn) as claim:  # a worker's claim holds the row
        claim.execute("SELECT id FROM queue.jobs WHERE id = %s FOR NO KEY UPDATE",
                      (prefetch[0]["id"],))
        with pytest.raises(psycopg.errors.ObjectInUse, match="is being generated"):
            _request(dsn, qid)


@pytest.mark.parametrize("mode", ["record", "block"])
def test_verification_mode_records_or_blocks_a_blind_disagreement(
        dsn: str, model: fake.FakeOpenAI, mode: str) -> None:
    """WORKER_EXPLANATION_VERIFY: the model also solves the question blind. It answers 2,
    the key is 3: `record` publishes and keeps the signal, `block` refuses to publish."""
    course = Course(dsn)
    agreed, disputed = course.question("합의", key=3), course.question("이견", key=3)

    def reply(request: fake.Recorded) -> fake.Reply:
        body = request.body
        blind = body["response_format"]["json_schema"]["name"] == "BlindAnswer"
        if not blind:
            return _envelope(3)
        said = 3 if "합의" in body["messages"][1]["content"] else 2
        return fake.chat_json({"answer_choice": said})

    model.fallback["chat"] = reply
    for qid in (agreed, disputed):
        _request(dsn, qid)
    _drain(dsn, model, explanation_verify=mode)
    ok, other = _job(dsn, agreed), _job(dsn, disputed)
    assert ok["status"] == "completed"
    assert (ok["result"]["blind_answer"], ok["result"]["verified"]) == (3, True)
    if mode == "record":
        assert other["status"] == "completed"
        assert (other["result"]["blind_answer"], other["result"]["verified"]) == (2, False)
        assert _question(dsn, disputed)["ai_explanation_status"] == "ready"
    else:
        assert (other["status"], other["error_code"]) == ("failed", "unverified")
        assert other["result"] == {"blind_answer": 2, "verified": False}
        assert _question(dsn, disputed)["ai_explanation"] is None
