"""Course weakness analysis on a real server with the fake model: the trigger, wrong-only
input, merging into the course, concurrent analyses, bad output, prompt versions, privileges."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

from tests.support import fake_openai as fake
from tests.support.db import sql as _sql
from tests.support.inproc import running_worker, until
from worker.config import load_settings
from worker.kinds import weakness
from worker.models.build import build_client
from worker.models.settings import ModelSettings
from worker.paths import PROMPTS_DIR
from worker.registry import Registry

KIND = weakness.KIND


def _course(dsn: str, analysis: Any = None) -> int:
    user = _sql(dsn, "INSERT INTO app.users (email) VALUES (gen_random_uuid()::text || '@x') "
                     "RETURNING id")[0]["id"]
    return int(_sql(dsn, "INSERT INTO app.courses (user_id, title, course_weakness_analysis) "
                         "VALUES (%s, '전기기사', %s) RETURNING id",
                    (user, None if analysis is None else Jsonb(analysis)))[0]["id"])


def _analysis(dsn: str, course: int) -> Any:
    return _sql(dsn, "SELECT course_weakness_analysis AS a FROM app.courses WHERE id = %s",
                (course,))[0]["a"]


def _mc(dsn: str, course: int, text: str, correct: int = 2, **extra: Any) -> int:
    values = {"course_id": course, "question_text": text, "choice_1": f"{text}-가",
              "choice_2": f"{text}-나", "choice_3": f"{text}-다", "choice_4": f"{text}-라",
              "correct_choice": correct, "explanation": f"{text}의 해설", **extra}
    return _insert(dsn, "app.questions", values)


def _descriptive(dsn: str, course: int, text: str, max_score: int = 10) -> int:
    return _insert(dsn, "app.questions", {
        "course_id": course, "question_type": "descriptive", "question_text": text,
        "reference_answer": f"{text}의 모범 답안", "max_score": max_score,
        "explanation": f"{text}의 해설"})


def _insert(dsn: str, table: str, values: dict[str, Any]) -> int:
    columns = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    return int(_sql(dsn, f"INSERT INTO {table} ({columns}) VALUES ({marks}) RETURNING id",
                    list(values.values()))[0]["id"])


def _quiz(dsn: str, course: int, status: str = "in_progress", kind: str = "quiz",
          title: str | None = None) -> int:
    user = _sql(dsn, "SELECT user_id FROM app.courses WHERE id = %s", (course,))[0]["user_id"]
    return _insert(dsn, "app.quizzes", {"course_id": course, "user_id": user, "kind": kind,
                                        "status": status, "title": title})


def _answer(dsn: str, quiz: int, question: int, **values: Any) -> int:
    return _insert(dsn, "app.quiz_answers", {"quiz_id": quiz, "question_id": question, **values})


def _grade(dsn: str, *quizzes: int) -> None:
    """Grade every quiz in one transaction."""
    _sql(dsn, "UPDATE app.quizzes SET status = 'graded', graded_at = now() WHERE id = ANY(%s)",
         (list(quizzes),))


def _jobs(dsn: str) -> list[dict[str, Any]]:
    return _sql(dsn, "SELECT id, subject, payload, status, attempts, error_code, result "
                     "FROM queue.jobs WHERE kind = %s ORDER BY id", (KIND,))


async def _finished(dsn: str) -> bool:
    rows = await asyncio.to_thread(_sql, dsn, "SELECT count(*) AS n FROM queue.jobs "
                                              "WHERE kind = %s AND status = 'pending'", (KIND,))
    return bool(rows[0]["n"] == 0)


def _reply(*weaknesses: tuple[str, str, list[int]], suggestions: tuple[str, ...] = (),
           **kwargs: Any) -> fake.Reply:
    return fake.chat_json({
        "weaknesses": [{"topic": topic, "severity": severity, "evidence": f"{topic}: 오답 근거",
                        "questions": numbers} for topic, severity, numbers in weaknesses],
        "suggestions": [{"text": text, "topics": []} for text in suggestions],
    }, **kwargs)


def _user_message(body: dict[str, Any]) -> str:
    return str(next(m["content"] for m in body["messages"] if m["role"] == "user"))


def _system_message(body: dict[str, Any]) -> str:
    return str(next(m["content"] for m in body["messages"] if m["role"] == "system"))


@pytest.fixture
def model() -> Iterator[fake.FakeOpenAI]:
    with fake.FakeOpenAI() as server:
        yield server


@contextlib.asynccontextmanager
async def weakness_worker(dsn: str, server: fake.FakeOpenAI, prompts_dir: Path | None = None,
                          **overrides: Any) -> AsyncIterator[Any]:
    # capacity 2 so that two analyses can be inside the model at the same moment
    models = ModelSettings(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="test-key",
                           llm_model="fake-model", llm_gate_capacity=2,
                           llm_timeouts={"weakness_analysis": 10.0})
    # the prompt versions come from the environment, as in production
    settings = load_settings(models=models, prompts={"directory": prompts_dir or PROMPTS_DIR})
    client = build_client(settings.models, dsn)
    registry = Registry()
    registry.register(weakness.kind(settings, client))
    try:
        async with running_worker(dsn, registry, **overrides) as worker:
            yield worker
    finally:
        await client.aclose()


def _run(dsn: str, server: fake.FakeOpenAI, prompts_dir: Path | None = None,
         **overrides: Any) -> None:
    async def main() -> None:
        async with weakness_worker(dsn, server, prompts_dir, **overrides):
            await until(lambda: _finished(dsn), message="weakness jobs finished")

    asyncio.run(main())


# -- the trigger -------------------------------------------------------------------------------


def test_only_a_change_to_graded_enqueues_one_job(dsn: str) -> None:
    course = _course(dsn)
    quiz = _quiz(dsn, course)
    _sql(dsn, "UPDATE app.quizzes SET status = 'submitted' WHERE id = %s", (quiz,))
    assert _jobs(dsn) == []
    _grade(dsn, quiz)
    jobs = _jobs(dsn)
    assert [(j["subject"], j["payload"], j["status"]) for j in jobs] == [
        (f"quiz:{quiz}", {"quiz_id": quiz, "course_id": course}, "pending")]
    # graded again, or another column edited: nothing new
    _grade(dsn, quiz)
    _sql(dsn, "UPDATE app.quizzes SET title = '1회' WHERE id = %s", (quiz,))
    assert len(_jobs(dsn)) == 1
    # a regrade while the job is still pending is covered by that job
    _sql(dsn, "UPDATE app.quizzes SET status = 'submitted' WHERE id = %s", (quiz,))
    _grade(dsn, quiz)
    assert len(_jobs(dsn)) == 1
    # a mock exam inserted as graded enqueues at once; a draft does not
    exam = _quiz(dsn, course, status="graded", kind="mock_exam")
    _quiz(dsn, course, status="draft")
    assert [j["subject"] for j in _jobs(dsn)] == [f"quiz:{quiz}", f"quiz:{exam}"]


def test_a_regrade_after_the_first_job_finished_is_a_new_job(dsn: str, model: Any) -> None:
    course = _course(dsn)
    question = _mc(dsn, course, "변압기 철손")
    quiz = _quiz(dsn, course)
    _answer(dsn, quiz, question, selected_choice=2, is_correct=True)
    _grade(dsn, quiz)
    _run(dsn, model)
    _sql(dsn, "UPDATE app.quizzes SET status = 'submitted' WHERE id = %s", (quiz,))
    _sql(dsn, "UPDATE app.quiz_answers SET selected_choice = 3, is_correct = false")
    _grade(dsn, quiz)
    model.script(_reply(("변압기 손실", "high", [1])))
    _run(dsn, model)
    jobs = _jobs(dsn)
    assert [(j["subject"], j["status"]) for j in jobs] == [
        (f"quiz:{quiz}", "completed"), (f"quiz:{quiz}", "completed")]
    assert jobs[0]["result"]["reason"] == "no_wrong_answers"
    assert jobs[1]["result"]["stored"] is True
    assert len(model.bodies()) == 1


# -- what the model is given -------------------------------------------------------------------


def test_only_wrong_answers_reach_the_model(dsn: str, model: Any) -> None:
    course = _course(dsn)
    right = _mc(dsn, course, "맞힌문제")
    wrong = _mc(dsn, course, "틀린문제", subject="전기기기", scope="변압기")
    unsure_right = _mc(dsn, course, "헷갈렸지만맞힌문제")
    unsure_wrong = _mc(dsn, course, "헷갈려서틀린문제")
    ungraded = _mc(dsn, course, "채점표시없는오답")
    gone = _mc(dsn, course, "삭제된문제")
    below = _descriptive(dsn, course, "감점된서술형")
    full = _descriptive(dsn, course, "만점서술형")
    quiz = _quiz(dsn, course, title="3회차")
    _answer(dsn, quiz, right, selected_choice=2, is_correct=True)
    _answer(dsn, quiz, wrong, selected_choice=3, is_correct=False)
    _answer(dsn, quiz, unsure_right, selected_choice=2, is_correct=True, unsure=True)
    _answer(dsn, quiz, unsure_wrong, selected_choice=4, is_correct=False, unsure=True)
    _answer(dsn, quiz, ungraded, selected_choice=1)
    _answer(dsn, quiz, gone, selected_choice=1, is_correct=False)
    _answer(dsn, quiz, below, answer_text="철손은 부하에 비례한다", score=3, max_score=10)
    _answer(dsn, quiz, full, answer_text="완벽한 답", score=10, max_score=10)
    _sql(dsn, "UPDATE app.questions SET deleted_at = now() WHERE id = %s", (gone,))
    _grade(dsn, quiz)
    model.script(_reply(("변압기 손실", "high", [1, 4]), ("보기 혼동", "low", [2, 3, 9]),
                        suggestions=("철손과 동손을 표로 비교해 정리하기",),
                        prompt_tokens=321, completion_tokens=45))
    _run(dsn, model)

    (body,) = model.bodies()
    user = _user_message(body)
    for sent in ("틀린문제", "헷갈려서틀린문제", "채점표시없는오답", "감점된서술형"):
        assert f"문제: {sent}" in user, sent
    for kept_out in ("맞힌문제", "헷갈렸지만맞힌문제", "삭제된문제", "만점서술형"):
        assert f"문제: {kept_out}" not in user, kept_out
    # question, choices, key, the learner's answer, explanation, score, reference answer
    first = user.split("[1] ", 1)[1].split("\n\n", 1)[0]
    assert first.splitlines() == [
        "객관식 | 과목: 전기기기 | 범위: 변압기", "문제: 틀린문제",
        "보기: ① 틀린문제-가 ② 틀린문제-나 ③ 틀린문제-다 ④ 틀린문제-라",
        "정답: ②", "학습자 답: ③", "해설: 틀린문제의 해설"]
    assert "학습자 답: ④ (헷갈림 표시)" in user
    descriptive = user.split("[4] ", 1)[1]
    assert "모범 답안: 감점된서술형의 모범 답안" in descriptive
    assert "학습자 답안: 철손은 부하에 비례한다" in descriptive
    assert "점수: 3 / 10" in descriptive
    assert "채점된 답안 8개, 오답 4개" in user
    assert "퀴즈 '3회차'" in user
    assert "(없음: 이 과목의 첫 분석입니다)" in user
    assert body["response_format"]["type"] == "json_schema"

    (job,) = _jobs(dsn)
    result = job["result"]
    assert job["status"] == "completed"
    assert {k: result[k] for k in ("wrong_answers", "answers", "deleted_questions_left_out",
                                   "prompt_version", "prompt_tokens", "completion_tokens",
                                   "model", "unknown_question_refs", "stored")} == {
        "wrong_answers": 4, "answers": 8, "deleted_questions_left_out": 1, "prompt_version": 1,
        "prompt_tokens": 321, "completion_tokens": 45, "model": "fake-model",
        "unknown_question_refs": 1, "stored": True}
    stored = _analysis(dsn, course)
    assert [(w["topic"], w["severity"]) for w in stored["weaknesses"]] == [
        ("변압기 손실", "high"), ("보기 혼동", "low")]
    entry = stored["history"][0]
    assert entry["weaknesses"][0]["question_ids"] == [wrong, below]
    assert entry["weaknesses"][1]["question_ids"] == [unsure_wrong, ungraded]
    assert stored["suggestions"][0]["text"] == "철손과 동손을 표로 비교해 정리하기"
    assert isinstance(stored["analyzed_at"], str)
    calls = _sql(dsn, "SELECT prompt_version, prompt_tokens FROM queue.model_calls "
                      "WHERE job_id = %s", (job["id"],))
    assert calls == [{"prompt_version": 1, "prompt_tokens": 321}]


def test_the_wrong_answer_rule(dsn: str) -> None:
    cases = [
        # type, is_correct, selected, correct, score, max → wrong?
        ("multiple_choice", False, 3, 2, None, None, True),
        ("multiple_choice", True, 2, 2, None, None, False),
        ("multiple_choice", None, 3, 2, None, None, True),
        ("multiple_choice", None, None, 2, None, None, True),
        ("multiple_choice", None, 2, 2, None, None, False),
        ("descriptive", None, None, None, 3, 10, True),
        ("descriptive", True, None, None, 10, 10, False),
        ("descriptive", None, None, None, 9.5, 10, True),
        ("descriptive", False, None, None, None, None, True),
        ("descriptive", None, None, None, None, 10, False),
    ]
    for *args, expected in cases:
        got = _sql(dsn, "SELECT app.answer_is_wrong(%s, %s, %s::smallint, %s::smallint, "
                        "%s::numeric, %s::numeric) AS w", args)[0]["w"]
        assert got is expected, args


def test_no_wrong_answers_means_no_model_call(dsn: str, model: Any) -> None:
    course = _course(dsn)
    quiz = _quiz(dsn, course)
    _answer(dsn, quiz, _mc(dsn, course, "쉬운문제"), selected_choice=2, is_correct=True)
    _answer(dsn, quiz, _descriptive(dsn, course, "쉬운서술형"), answer_text="답", score=10,
            max_score=10)
    empty_quiz = _quiz(dsn, course)
    _grade(dsn, quiz, empty_quiz)
    _run(dsn, model)
    assert model.requests == []
    assert _sql(dsn, "SELECT count(*) AS n FROM queue.model_calls") == [{"n": 0}]
    assert [(j["status"], j["result"]["analyzed"], j["result"]["reason"])
            for j in _jobs(dsn)] == [("completed", False, "no_wrong_answers")] * 2
    assert _analysis(dsn, course) is None


# -- the stored analysis ----------------------------------------------------------------------


def test_a_new_analysis_is_merged_into_the_existing_one(dsn: str, model: Any) -> None:
    legacy = {"weaknesses": [{"topic": "전력 계산", "severity": "medium"}],
              "suggestions": ["역률 공식 암기"], "analyzed_at": "2024-05-01 10:00:00"}
    course = _course(dsn, legacy)
    first, second = _quiz(dsn, course), _quiz(dsn, course, kind="mock_exam")
    for quiz, text in ((first, "철손문제"), (second, "동손문제")):
        _answer(dsn, quiz, _mc(dsn, course, text), selected_choice=1, is_correct=False)
        _answer(dsn, quiz, _mc(dsn, course, text + "2"), selected_choice=1, is_correct=False)
    _grade(dsn, first)
    model.script(_reply(("변압기 손실", "medium", [1, 2]), suggestions=("철손 정리",)))
    _run(dsn, model)
    _grade(dsn, second)
    model.script(_reply(("변압기손실", "high", [1]), ("송전 선로", "low", [2]),
                        suggestions=("동손 계산 연습",)))
    _run(dsn, model)

    stored = _analysis(dsn, course)
    assert [(w["topic"], w["severity"], w["occurrences"]) for w in stored["weaknesses"]] == [
        ("변압기손실", "high", 2), ("전력 계산", "medium", 1), ("송전 선로", "low", 1)]
    assert stored["weaknesses"][0]["quiz_ids"] == [first, second]
    assert [s["text"] for s in stored["suggestions"]] == ["동손 계산 연습", "철손 정리",
                                                          "역률 공식 암기"]
    jobs = _jobs(dsn)
    history = _sql(dsn, "SELECT source, quiz_id, job_id, prompt_version, superseded_by_job "
                        "FROM app.course_weakness_history(%s)", (course,))
    assert history == [
        {"source": "legacy", "quiz_id": None, "job_id": None, "prompt_version": None,
         "superseded_by_job": None},
        {"source": "quiz", "quiz_id": first, "job_id": jobs[0]["id"], "prompt_version": 1,
         "superseded_by_job": None},
        {"source": "quiz", "quiz_id": second, "job_id": jobs[1]["id"], "prompt_version": 1,
         "superseded_by_job": None}]
    assert stored["history"][0]["original"] == legacy
    assert stored["analyzed_at"] == stored["history"][2]["analyzed_at"]
    # the second prompt carried the summary of what existed, not the history itself
    second_user = _user_message(model.bodies()[1])
    assert "- 전력 계산 (medium, 1회)" in second_user
    assert "- 변압기 손실 (medium, 1회)" in second_user
    assert "변압기 손실: 오답 근거" not in second_user
    assert "철손문제" not in second_user
    assert "모의고사" in second_user


def test_a_regraded_quiz_supersedes_its_earlier_analysis(dsn: str, model: Any) -> None:
    course = _course(dsn)
    quiz = _quiz(dsn, course)
    _answer(dsn, quiz, _mc(dsn, course, "문제"), selected_choice=1, is_correct=False)
    _grade(dsn, quiz)
    model.script(_reply(("첫 주제", "high", [1])))
    _run(dsn, model)
    _sql(dsn, "UPDATE app.quizzes SET status = 'grading' WHERE id = %s", (quiz,))
    _grade(dsn, quiz)
    model.script(_reply(("둘째 주제", "low", [1])))
    _run(dsn, model)
    stored = _analysis(dsn, course)
    jobs = _jobs(dsn)
    assert [w["topic"] for w in stored["weaknesses"]] == ["둘째 주제"]
    assert [(h["job_id"], h["superseded_by_job"]) for h in stored["history"]] == [
        (jobs[0]["id"], jobs[1]["id"]), (jobs[1]["id"], None)]
    assert jobs[1]["result"]["superseded"] == 1


def test_two_quizzes_graded_together_both_land(dsn: str, model: Any) -> None:
    course = _course(dsn, {"weaknesses": ["기존 약점"], "suggestions": [],
                           "analyzed_at": "2024-01-01"})
    quizzes = {}
    for topic in ("회로 이론", "전기 기기"):
        quiz = _quiz(dsn, course)
        _answer(dsn, quiz, _mc(dsn, course, topic), selected_choice=1, is_correct=False)
        quizzes[topic] = quiz

    def respond(request: fake.Recorded) -> fake.Reply:
        topic = next(t for t in quizzes if f"문제: {t}" in _user_message(request.body))
        # held until both analyses are inside the model: each has read the course analysis
        # before either writes, which is the moment a lost update would happen
        return _reply((topic, "high", [1]), await_in_flight=2)

    model.script(respond, respond)
    _grade(dsn, *quizzes.values())
    _run(dsn, model, concurrency={KIND: 2})

    assert model.max_in_flight == 2
    stored = _analysis(dsn, course)
    assert sorted(w["topic"] for w in stored["weaknesses"]) == ["기존 약점", "전기 기기",
                                                                "회로 이론"]
    assert sorted(h["quiz_id"] for h in stored["history"] if h["quiz_id"]) == sorted(
        quizzes.values())
    assert [j["status"] for j in _jobs(dsn)] == ["completed", "completed"]


def test_unusable_output_is_retried_then_fails_and_keeps_the_analysis(
    dsn: str, model: Any
) -> None:
    before = {"weaknesses": ["기존 약점"], "suggestions": ["기존 제안"], "analyzed_at": "x"}
    course = _course(dsn, before)
    quiz = _quiz(dsn, course)
    _answer(dsn, quiz, _mc(dsn, course, "문제"), selected_choice=1, is_correct=False)
    model.fallback["chat"] = lambda request: fake.chat("분석 결과를 드릴 수 없습니다.")
    _grade(dsn, quiz)
    _run(dsn, model)
    (job,) = _jobs(dsn)
    assert (job["status"], job["attempts"], job["error_code"]) == ("failed", 2, "parse_fail")
    assert len(model.bodies()) == 4  # two attempts, each with its one in-call retry
    assert _analysis(dsn, course) == before
    outcomes = _sql(dsn, "SELECT outcome, error_code FROM queue.model_calls "
                         "WHERE job_id = %s ORDER BY id", (job["id"],))
    assert [o["error_code"] for o in outcomes] == ["invalid_output", "parse_fail"] * 2


def test_an_empty_or_unfounded_analysis_changes_nothing(dsn: str, model: Any) -> None:
    before = {"weaknesses": ["기존 약점"], "suggestions": [], "analyzed_at": "x"}
    course = _course(dsn, before)
    quizzes = []
    for _ in range(2):
        quiz = _quiz(dsn, course)
        _answer(dsn, quiz, _mc(dsn, course, f"문제{quiz}"), selected_choice=1,
                is_correct=False)
        quizzes.append(quiz)
    # one empty, one whose only weakness cites a question that was never sent
    model.script(_reply(), _reply(("근거 없는 주제", "high", [7])))
    _grade(dsn, *quizzes)
    _run(dsn, model, concurrency={KIND: 1})
    results = [j["result"] for j in _jobs(dsn)]
    assert [(r["stored"], r["reason"]) for r in results] == [(False, "empty_analysis")] * 2
    assert results[1]["unsupported_weaknesses_dropped"] == 1
    assert _analysis(dsn, course) == before


def test_bad_jobs_end_with_a_clear_code_and_disturb_nothing(dsn: str, model: Any) -> None:
    course = _course(dsn)
    good = _quiz(dsn, course)
    _answer(dsn, good, _mc(dsn, course, "문제"), selected_choice=1, is_correct=False)
    ungraded = _quiz(dsn, course)
    _grade(dsn, good, ungraded)
    _sql(dsn, "UPDATE app.quizzes SET status = 'submitted' WHERE id = %s", (ungraded,))
    _sql(dsn, "SELECT queue.enqueue(%s, 'quiz:x', '{\"quiz_id\": \"x\"}')", (KIND,))
    _sql(dsn, "SELECT queue.enqueue(%s, 'quiz:999999', '{\"quiz_id\": 999999}')", (KIND,))
    model.script(_reply(("변압기", "high", [1])))
    _run(dsn, model)
    outcome = {j["subject"]: (j["status"], j["error_code"]) for j in _jobs(dsn)}
    assert outcome == {
        f"quiz:{good}": ("completed", None),
        f"quiz:{ungraded}": ("skipped", "quiz_not_graded"),
        "quiz:x": ("failed", "bad_payload"),
        "quiz:999999": ("skipped", "quiz_missing"),
    }
    assert [w["topic"] for w in _analysis(dsn, course)["weaknesses"]] == ["변압기"]
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        _sql(dsn, "SELECT app.request_weakness_analysis(%s)", (ungraded,))
    requeued = _sql(dsn, "SELECT app.request_weakness_analysis(%s) AS id", (good,))[0]["id"]
    assert _sql(dsn, "SELECT subject, status FROM queue.jobs WHERE id = %s", (requeued,)) == [
        {"subject": f"quiz:{good}", "status": "pending"}]


# -- prompt versions --------------------------------------------------------------------------


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    folder = tmp_path / KIND
    folder.mkdir()
    shutil.copy(PROMPTS_DIR / KIND / "v1.yaml", folder / "v1.yaml")
    text = (PROMPTS_DIR / KIND / "v1.yaml").read_text(encoding="utf-8")
    (folder / "v2.yaml").write_text(text.replace("system: |\n", "system: |\n  (v2 프롬프트)\n", 1),
                                    encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, 2),
    ({"PROMPT_VERSION": "1"}, 1),
    ({"PROMPT_VERSION": "1", "PROMPT_VERSION_WEAKNESS_ANALYSIS": "2"}, 2),
])
def test_the_prompt_version_is_selected_and_recorded(
    dsn: str, model: Any, prompts: Path, monkeypatch: pytest.MonkeyPatch,
    environ: dict[str, str], expected: int,
) -> None:
    for name in ("PROMPT_VERSION", "PROMPT_VERSION_WEAKNESS_ANALYSIS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    course = _course(dsn)
    quiz = _quiz(dsn, course)
    _answer(dsn, quiz, _mc(dsn, course, "문제"), selected_choice=1, is_correct=False)
    _grade(dsn, quiz)
    model.script(_reply(("주제", "medium", [1])))
    _run(dsn, model, prompts_dir=prompts)
    (job,) = _jobs(dsn)
    assert job["result"]["prompt_version"] == expected
    assert ("(v2 프롬프트)" in _system_message(model.bodies()[0])) is (expected == 2)
    assert _sql(dsn, "SELECT prompt_version FROM queue.model_calls WHERE job_id = %s",
                (job["id"],)) == [{"prompt_version": expected}]
    assert _analysis(dsn, course)["history"][0]["prompt_version"] == expected


# -- least privilege --------------------------------------------------------------------------


def test_the_least_privilege_role_runs_the_kind(dsn: str, model: Any) -> None:
    _sql(dsn, "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = "
              "'worker_login') THEN CREATE ROLE worker_login LOGIN IN ROLE llm_worker; "
              "END IF; END $$")
    worker_dsn = make_conninfo(dsn, user="worker_login")
    course = _course(dsn)
    quiz = _quiz(dsn, course)
    _answer(dsn, quiz, _descriptive(dsn, course, "서술형"), answer_text="답", score=1,
            max_score=5)
    _grade(dsn, quiz)
    model.script(_reply(("서술 논리", "medium", [1])))

    async def main() -> None:
        async with weakness_worker(worker_dsn, model):
            await until(lambda: _finished(dsn), message="finished as worker_login")

    asyncio.run(main())
    assert [(j["status"], j["result"]["stored"]) for j in _jobs(dsn)] == [("completed", True)]
    assert _sql(dsn, "SELECT count(*) AS n FROM queue.model_calls") == [{"n": 1}]
    with psycopg.connect(worker_dsn, autocommit=True) as conn:
        for statement in ("SELECT email FROM app.users",
                          "SELECT user_id FROM app.quizzes",
                          "UPDATE app.courses SET title = 'x'",
                          "UPDATE app.quizzes SET status = 'graded'"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement.encode())


# -- regrades while an analysis runs -----------------------------------------------------------


def _held(reply: fake.Reply, release: threading.Event, inside: threading.Event
          ) -> fake.Responder:
    """A reply that waits in the model until the test releases it."""
    def respond(request: fake.Recorded) -> fake.Reply:
        inside.set()
        release.wait(20)
        return reply
    return respond


async def _regrade(app: psycopg.AsyncConnection[Any], quiz: int, *, wrong: bool) -> None:
    """The app regrades the quiz in one transaction (left open for the caller to commit)."""
    await app.execute(b"UPDATE app.quizzes SET status = 'grading' WHERE id = %s", (quiz,))
    await app.execute(b"UPDATE app.quiz_answers SET is_correct = %s, selected_choice = %s "
                      b"WHERE quiz_id = %s", (not wrong, 1 if wrong else 2, quiz))
    await app.execute(b"UPDATE app.quizzes SET status = 'graded', graded_at = now() "
                      b"WHERE id = %s", (quiz,))


def test_a_regrade_committed_while_the_analysis_runs_is_analysed_instead(
        dsn: str, model: Any) -> None:
    """The regrade commits while the analysis waits for the model: at write-back the job
    finds its input changed, stores nothing for the old grading and runs again at once."""
    course = _course(dsn)
    quiz = _quiz(dsn, course)
    first, second = _mc(dsn, course, "첫 문제"), _mc(dsn, course, "둘째 문제")
    _answer(dsn, quiz, first, selected_choice=1, is_correct=False)
    _answer(dsn, quiz, second, selected_choice=2, is_correct=True)
    _grade(dsn, quiz)
    release, inside = threading.Event(), threading.Event()
    model.script(_held(_reply(("옛 채점", "high", [1])), release, inside),
                 _reply(("새 채점", "high", [1, 2])))

    async def main() -> None:
        async with weakness_worker(dsn, model):
            await asyncio.to_thread(inside.wait, 10)
            async with await psycopg.AsyncConnection.connect(dsn) as app:
                await _regrade(app, quiz, wrong=True)  # both answers wrong now
            release.set()
            await until(lambda: _finished(dsn), message="the analysis finished")

    asyncio.run(main())
    jobs = _jobs(dsn)
    assert [(j["status"], j["attempts"]) for j in jobs] == [("completed", 1)], jobs
    assert [w["topic"] for w in _analysis(dsn, course)["weaknesses"]] == ["새 채점"]
    assert "둘째 문제" in _user_message(model.bodies()[1])
    outcomes = _sql(dsn, "SELECT outcome FROM queue.attempts WHERE job_id = %s ORDER BY id",
                    (jobs[0]["id"],))
    assert [o["outcome"] for o in outcomes] == ["superseded", "completed"]


def test_a_regrade_committed_after_the_analysis_finished_runs_it_again(
        dsn: str, model: Any) -> None:
    """The regrade's enqueue meets the running job and leaves a rerun request without
    waiting on the claim; it commits only after the job has finished on the old grading,
    so the finish could not see it: the heartbeat's sweep turns it into a new job."""
    course = _course(dsn)
    quiz = _quiz(dsn, course)
    first, second = _mc(dsn, course, "첫 문제"), _mc(dsn, course, "둘째 문제")
    _answer(dsn, quiz, first, selected_choice=1, is_correct=False)
    _answer(dsn, quiz, second, selected_choice=2, is_correct=True)
    _grade(dsn, quiz)
    release, inside = threading.Event(), threading.Event()
    model.script(_held(_reply(("옛 채점", "high", [1])), release, inside),
                 _reply(("새 채점", "high", [1, 2])))

    async def main() -> None:
        async with weakness_worker(dsn, model, heartbeat_interval=0.2):
            await asyncio.to_thread(inside.wait, 10)
            async with await psycopg.AsyncConnection.connect(dsn) as app:
                await _regrade(app, quiz, wrong=True)  # returns at once: no lock wait
                release.set()
                await until(lambda: _sql_async(dsn, "SELECT 1 FROM queue.jobs WHERE "
                                                    "status = 'completed'"),
                            message="the first analysis committed")
            # the regrade commits here, after that finish
            await until(lambda: _sql_async(dsn, "SELECT 1 FROM queue.jobs WHERE status = "
                                                "'completed' HAVING count(*) = 2"),
                        message="the rerun analysed the regrade")

    asyncio.run(main())
    jobs = _jobs(dsn)
    assert [(j["status"], j["result"]["stored"]) for j in jobs] == [
        ("completed", True), ("completed", True)]
    assert [w["topic"] for w in _analysis(dsn, course)["weaknesses"]] == ["새 채점"]
    assert _sql(dsn, "SELECT count(*) AS n FROM queue.reruns") == [{"n": 0}]


def test_a_regrade_committed_before_the_finish_reran_at_once(dsn: str, model: Any) -> None:
    """Same, but the regrade commits before the job's finish reads the requests: the
    finish itself enqueues the successor, in the claim's commit."""
    course = _course(dsn)
    quiz = _quiz(dsn, course)
    _answer(dsn, quiz, _mc(dsn, course, "문제"), selected_choice=1, is_correct=False)
    _grade(dsn, quiz)
    release, inside = threading.Event(), threading.Event()
    model.script(_held(_reply(("첫 분석", "high", [1])), release, inside),
                 _reply(("다시 분석", "high", [1])))

    async def main() -> None:
        # the sweep is an hour away: only the finish can pick the request up
        async with weakness_worker(dsn, model, heartbeat_interval=3600):
            await asyncio.to_thread(inside.wait, 10)
            # a manual request: the job is running, so this asks for a rerun
            rows = await _sql_async(dsn, "SELECT app.request_weakness_analysis(%s) AS id",
                                    (quiz,))
            assert rows[0]["id"] == _jobs(dsn)[0]["id"]
            assert await _sql_async(dsn, "SELECT requests FROM queue.reruns") == [
                {"requests": 1}]
            release.set()
            await until(lambda: _sql_async(dsn, "SELECT 1 FROM queue.jobs WHERE status = "
                                                "'completed' HAVING count(*) = 2"),
                        message="the rerun ran")

    asyncio.run(main())
    assert [j["subject"] for j in _jobs(dsn)] == [f"quiz:{quiz}"] * 2


async def _sql_async(dsn: str, query: str, params: Any = None) -> list[dict[str, Any]]:
    return await asyncio.to_thread(_sql, dsn, query, params)


def test_an_open_app_transaction_that_starts_a_quiz_does_not_block_the_merge(
        dsn: str, model: Any) -> None:
    """Inserting a quiz takes FOR KEY SHARE on its course (the foreign key check) until the
    app commits; the merge locks the course FOR NO KEY UPDATE, which does not wait for it."""
    course = _course(dsn)
    quiz = _quiz(dsn, course)
    _answer(dsn, quiz, _mc(dsn, course, "문제"), selected_choice=1, is_correct=False)
    _grade(dsn, quiz)
    model.script(_reply(("변압기", "high", [1])))
    user = _sql(dsn, "SELECT user_id FROM app.courses WHERE id = %s", (course,))[0]["user_id"]

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as app:
            await app.execute(b"INSERT INTO app.quizzes (course_id, user_id, kind, status) "
                              b"VALUES (%s, %s, 'quiz', 'in_progress')", (course, user))
            async with weakness_worker(dsn, model, lock_timeout_ms=1000):
                await until(lambda: _finished(dsn), message="the analysis finished")
            await app.rollback()

    asyncio.run(main())
    assert [(j["status"], j["attempts"]) for j in _jobs(dsn)] == [("completed", 1)]
    assert [w["topic"] for w in _analysis(dsn, course)["weaknesses"]] == ["변압기"]


def _analyse_one_wrong_answer(dsn: str, model: Any, course: int) -> int:
    """A quiz of the course with one wrong answer, graded and analysed; its id."""
    question = _mc(dsn, course, "변압기 철손")
    quiz = _quiz(dsn, course)
    _answer(dsn, quiz, question, selected_choice=3, is_correct=False)
    _grade(dsn, quiz)
    model.script(_reply(("변압기 손실", "high", [1])))
    _run(dsn, model)
    return quiz


def test_a_stored_analysis_nested_too_deep_to_decode_does_not_fail_the_course(
        dsn: str, model: Any) -> None:
    """A course_weakness_analysis nested 5,000 deep (jsonb takes it, a JSON decoder does not)
    failed every later analysis of its course `unknown_error/RecursionError`, forever. It is
    read back bounded: kept as a clipped legacy entry, and the new analysis lands."""
    course = _course(dsn)
    _sql(dsn, "UPDATE app.courses SET course_weakness_analysis = "
              "(repeat('[', 5000) || repeat(']', 5000))::jsonb WHERE id = %s", (course,))
    _analyse_one_wrong_answer(dsn, model, course)
    (job,) = _jobs(dsn)
    assert (job["status"], job["error_code"]) == ("completed", None), job
    stored = _analysis(dsn, course)
    assert [w["topic"] for w in stored["weaknesses"]] == ["변압기 손실"]
    legacy = stored["history"][0]
    assert legacy["source"] == "legacy" and legacy["original"] is None
    assert "nested" in legacy["unreadable"]


def test_the_stored_history_is_bounded(dsn: str, model: Any) -> None:
    """Every analysis adds a history entry; past the bound the oldest superseded entries go
    first, then the oldest, so the column cannot grow toward jsonb's limit."""
    from worker.kinds.weakness_store import MAX_HISTORY

    entry = {"source": "quiz", "quiz_id": 0, "job_id": 0, "analyzed_at": "2026-01-01",
             "weaknesses": [{"topic": "옛 주제", "severity": "low", "evidence": "e",
                             "question_ids": [1]}], "suggestions": [],
             "superseded_by_job": None}
    history = [{**entry, "quiz_id": n, "job_id": n} for n in range(MAX_HISTORY + 20)]
    history[5]["superseded_by_job"] = 99
    course = _course(dsn, {"format": 1, "history": history})
    quiz = _analyse_one_wrong_answer(dsn, model, course)
    stored = _analysis(dsn, course)["history"]
    assert len(stored) == MAX_HISTORY
    assert stored[-1]["quiz_id"] == quiz
    kept = [e["quiz_id"] for e in stored[:-1]]
    assert 5 not in kept and kept == sorted(kept) and kept[-1] == MAX_HISTORY + 19


def test_grading_many_quizzes_at_once_paces_their_analyses_by_the_course_budget(
        dsn: str) -> None:
    """One UPDATE grading 5 quizzes of a course with a budget of 2 analyses per course and
    hour: 2 are due now, 2 in an hour, 1 in two; none is dropped. Another course is not
    held back."""
    _sql(dsn, "UPDATE app.budgets SET value = 2 "
              "WHERE name = 'weakness_analyses_per_course_per_hour'")
    course, other = _course(dsn), _course(dsn)
    quizzes = [_quiz(dsn, course) for _ in range(5)]
    _grade(dsn, *quizzes)
    _grade(dsn, _quiz(dsn, other))
    hours = _sql(dsn, "SELECT payload->>'course_id' AS course, "
                      "round(extract(epoch FROM run_at - created_at) / 3600)::int AS h "
                      "FROM queue.jobs WHERE kind = %s ORDER BY id", (KIND,))
    assert [r["h"] for r in hours if r["course"] == str(course)] == [0, 0, 1, 1, 2]
    assert [r["h"] for r in hours if r["course"] == str(other)] == [0]
