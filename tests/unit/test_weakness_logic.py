"""Weakness analysis without a database: rendering the wrong answers, the bounded summary,
merging into the stored analysis, grounding the model's claims, and the output model."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from worker.config import Settings
from worker.errors import FinalFailure
from worker.executor import parse_payload
from worker.kinds import weakness as w
from worker.kinds import weakness_store as store
from worker.models.client import ModelClient
from worker.models.settings import ModelSettings
from worker.prompts import load_prompt


def _answer(number: int = 1, **changes: Any) -> w.WrongAnswer:
    values: dict[str, Any] = {
        "question_id": 100 + number, "question_type": "multiple_choice",
        "question_text": f"변압기 문제 {number}",
        "choices": ("철손", "동손", "와류손", "히스테리시스손"),
        "correct_choice": 2, "reference_answer": None, "explanation": "동손은 부하에 따라 변한다",
        "subject": "전기기기", "scope": None, "selected_choice": 1, "answer_text": None,
        "unsure": False, "score": None, "max_score": None}
    values.update(changes)
    return w.WrongAnswer(**values)


def _entry(quiz_id: int, job_id: int, *weaknesses: tuple[str, str],
           suggestions: tuple[str, ...] = (), at: str | None = None) -> dict[str, Any]:
    return {"source": "quiz", "quiz_id": quiz_id, "quiz_kind": "quiz", "job_id": job_id,
            "analyzed_at": at or f"2026-01-{job_id:02d}T00:00:00+00:00", "prompt_version": 1,
            "model": "m", "wrong_answers": 1,
            "weaknesses": [{"topic": t, "severity": s, "evidence": f"{t} 근거 {job_id}",
                            "question_ids": [1]} for t, s in weaknesses],
            "suggestions": [{"text": text, "topics": []} for text in suggestions],
            "superseded_by_job": None}


def _history(count: int, topics_each: int = 3) -> dict[str, Any]:
    stored: Any = None
    for n in range(1, count + 1):
        topics = [(f"주제 {n:03d}-{k}", "medium") for k in range(topics_each)]
        stored, _ = store.merge(stored, _entry(n, n, *topics, suggestions=(f"제안 {n}",)))
    return dict(stored)


# -- rendering --------------------------------------------------------------------------------


def test_a_multiple_choice_answer_shows_key_choice_and_explanation() -> None:
    text = w.render_wrong_answers([_answer(), _answer(2, selected_choice=None, unsure=True,
                                                      subject=None, explanation=None)])
    first, second = text.split("\n\n")
    assert first.splitlines() == [
        "[1] 객관식 | 과목: 전기기기", "문제: 변압기 문제 1",
        "보기: ① 철손 ② 동손 ③ 와류손 ④ 히스테리시스손", "정답: ②", "학습자 답: ①",
        "해설: 동손은 부하에 따라 변한다"]
    assert second.splitlines()[0] == "[2] 객관식"
    assert "학습자 답: (무응답) (헷갈림 표시)" in second
    assert "해설" not in second


def test_a_descriptive_answer_shows_reference_answer_and_score() -> None:
    text = _answer(question_type="descriptive", choices=(None,) * 4, correct_choice=None,
                   reference_answer="철손은 부하와 무관하다", answer_text="철손은   부하에 비례",
                   score=Decimal("2.50"), max_score=Decimal("10")).render(3)
    assert text.splitlines()[:5] == [
        "[3] 서술형 | 과목: 전기기기", "문제: 변압기 문제 1", "모범 답안: 철손은 부하와 무관하다",
        "학습자 답안: 철손은   부하에 비례", "점수: 2.5 / 10"]
    assert "보기" not in text and "정답" not in text


def test_long_fields_are_clipped() -> None:
    text = _answer(explanation="가" * 5000, question_text="나" * 5000).render(1)
    explanation = next(line for line in text.splitlines() if line.startswith("해설: "))
    assert len(explanation) == len("해설: ") + w.CHARS["explanation"]
    assert explanation.endswith("…")
    assert len(text) < 2000


# -- the bounded summary ----------------------------------------------------------------------


def test_the_summary_of_nothing_says_it_is_the_first_analysis() -> None:
    assert store.summarize(store.normalize(None)) == ("(없음: 이 과목의 첫 분석입니다)", 0)


def test_the_summary_is_bounded_whatever_the_history() -> None:
    sizes = []
    for count in (1, 10, 50, 200):
        stored = _history(count)
        summary, named = store.summarize(stored)
        assert named <= store.SUMMARY_MAX_TOPICS
        # the cap, plus the one "… 그 밖에 N개" line
        assert len(summary) <= store.SUMMARY_MAX_CHARS + 20
        assert "근거" not in summary  # evidence never reaches the prompt
        sizes.append(len(summary))
    assert sizes[0] <= sizes[1] <= sizes[2] == sizes[3]
    long = store.normalize({"weaknesses": ["가" * 70] * 1})
    assert store.summarize(long)[0] == f"- {'가' * 59}… (medium, 1회)"


def test_the_summary_is_cut_by_characters_too() -> None:
    stored = store.rebuild([_entry(1, 1, *[(f"{k}" + "주제" * 25, "high") for k in range(12)])])
    summary, named = store.summarize(stored, max_chars=300)
    assert named == 4 and len(summary) <= 300 + 20
    assert summary.endswith("- … 그 밖에 8개")


def test_the_rendered_prompt_stays_flat_as_the_history_grows() -> None:
    prompt = load_prompt(w.KIND, 1, variables=w.VARIABLES)
    quiz = {"kind": "quiz", "title": "5회", "answers": 20}
    answers = [_answer(n) for n in range(1, 6)]
    chars = {}
    for count in (1, 10, 50):
        stored = _history(count)
        summary, _ = store.summarize(stored)
        messages = prompt.render(w.prompt_values("전기기사", quiz, answers, 5, summary))
        chars[count] = w.prompt_chars(messages)
        assert len(json.dumps(stored, ensure_ascii=False)) > 1000 * count  # the record grows
    assert chars[50] - chars[10] <= 5
    assert chars[10] - chars[1] <= store.SUMMARY_MAX_CHARS


# -- normalizing and merging ------------------------------------------------------------------


def test_a_seed_style_analysis_becomes_a_legacy_entry() -> None:
    seed = {"weaknesses": ["전력 계산", {"name": "역률", "level": "높음", "description": "개선"},
                           {"nothing": 1}, 7],
            "suggestions": ["공식 암기", {"suggestion": "문제 풀이"}], "analyzed_at": "2024-05-01"}
    stored = store.normalize(seed)
    (entry,) = stored["history"]
    assert entry["source"] == "legacy" and entry["original"] == seed
    # what cannot be read as a topic is only in `original`
    assert [(x["topic"], x["severity"], x["evidence"]) for x in entry["weaknesses"]] == [
        ("전력 계산", "medium", ""), ("역률", "high", "개선")]
    assert [x["topic"] for x in stored["weaknesses"]] == ["역률", "전력 계산"]
    assert [s["text"] for s in stored["suggestions"]] == ["공식 암기", "문제 풀이"]
    assert stored["analyzed_at"] == "2024-05-01"


@pytest.mark.parametrize("garbage", ["a string", [1, 2], 42, True, {"weaknesses": "x"}])
def test_anything_else_in_the_column_is_kept_not_fatal(garbage: Any) -> None:
    merged, _ = store.merge(garbage, _entry(1, 1, ("새 주제", "low")))
    assert merged["history"][0]["original"] == garbage
    assert [x["topic"] for x in merged["weaknesses"]] == ["새 주제"]


def test_a_merge_adds_the_new_analysis_and_keeps_the_history() -> None:
    stored, _ = store.merge(None, _entry(1, 1, ("변압기 손실", "low"), ("회로", "medium"),
                                     suggestions=("철손 정리",)))
    stored, _ = store.merge(stored, _entry(2, 2, ("변압기손실!", "high"), ("송전", "low"),
                                       suggestions=("동손 계산", "철손  정리")))
    assert [(x["topic"], x["severity"], x["occurrences"], x["quiz_ids"])
            for x in stored["weaknesses"]] == [
        ("변압기손실!", "high", 2, [1, 2]), ("회로", "medium", 1, [1]), ("송전", "low", 1, [2])]
    assert stored["weaknesses"][0]["evidence"] == ["변압기 손실 근거 1", "변압기손실! 근거 2"]
    assert stored["weaknesses"][0]["first_seen_at"] == "2026-01-01T00:00:00+00:00"
    assert [s["text"] for s in stored["suggestions"]] == ["동손 계산", "철손  정리"]
    assert [h["job_id"] for h in stored["history"]] == [1, 2]
    assert stored["analyzed_at"] == "2026-01-02T00:00:00+00:00"
    assert store.normalize(stored) == stored  # re-reading the stored value changes nothing


def test_a_second_analysis_of_one_quiz_supersedes_the_first() -> None:
    stored, _ = store.merge(None, _entry(1, 1, ("옛 주제", "high")))
    stored, _ = store.merge(stored, _entry(2, 2, ("다른 퀴즈", "low")))
    stored, superseded = store.merge(stored, _entry(1, 3, ("새 주제", "medium")))
    assert superseded == 1
    assert [x["topic"] for x in stored["weaknesses"]] == ["새 주제", "다른 퀴즈"]
    assert [h["superseded_by_job"] for h in stored["history"]] == [3, None, None]


def test_evidence_and_suggestions_in_the_aggregate_are_capped() -> None:
    stored: Any = None
    for n in range(1, 31):
        stored, _ = store.merge(stored, _entry(n, n, ("같은 주제", "medium"),
                                           suggestions=(f"제안 {n}",)))
    (topic,) = stored["weaknesses"]
    assert topic["occurrences"] == 30 and len(topic["evidence"]) == store.AGGREGATE_EVIDENCE
    assert topic["evidence"][-1] == "같은 주제 근거 30"
    assert len(stored["suggestions"]) == store.AGGREGATE_SUGGESTIONS
    assert stored["suggestions"][0]["text"] == "제안 30"
    assert len(stored["history"]) == 30


# -- the model's answer ------------------------------------------------------------------------


def test_the_output_model_cleans_and_rejects() -> None:
    value = w.WeaknessAnalysis.model_validate({
        "weaknesses": [{"topic": "  변압기\n손실 ", "severity": "높음", "evidence": "근거",
                        "questions": ["1", 2]}],
        "suggestions": [{"text": "x" * 1000, "topics": []}]})
    assert value.weaknesses[0].topic == "변압기 손실"
    assert value.weaknesses[0].severity == "high"
    assert value.weaknesses[0].questions == [1, 2]
    assert len(value.suggestions[0].text) == store.TEXT_CHARS
    for bad in ({"topic": " ", "severity": "high", "evidence": "e", "questions": []},
                {"topic": "t", "severity": "fatal", "evidence": "e", "questions": []},
                {"topic": "t", "severity": "low", "questions": []}):
        with pytest.raises(ValidationError):
            w.WeaknessAnalysis.model_validate({"weaknesses": [bad], "suggestions": []})


def test_grounding_keeps_only_weaknesses_the_answers_show() -> None:
    answers = [_answer(1), _answer(2)]
    analysis = w.WeaknessAnalysis.model_validate({
        "weaknesses": [
            {"topic": "a", "severity": "high", "evidence": "e", "questions": [2, 2, 1, 5]},
            {"topic": "b", "severity": "low", "evidence": "e", "questions": [0, 3]},
            {"topic": "c", "severity": "low", "evidence": "e", "questions": []}],
        "suggestions": [{"text": "s", "topics": ["a", " ", *"bcdefg"]}]})
    weaknesses, suggestions, counts = w.ground(analysis, answers)
    assert weaknesses == [{"topic": "a", "severity": "high", "evidence": "e",
                           "question_ids": [102, 101]}]
    assert suggestions == [{"text": "s", "topics": ["a", "b", "c", "d", "e"]}]
    assert counts == {"unknown_question_refs": 3, "unsupported_weaknesses_dropped": 2}


# -- the prompt and the kind ------------------------------------------------------------------


def test_the_v1_prompt_renders_every_part() -> None:
    prompt = load_prompt(w.KIND, 1, variables=w.VARIABLES)
    quiz = {"kind": "mock_exam", "title": None, "answers": 100}
    answers = [_answer(1, question_text="{course_title} 그대로 {0}")]
    values = w.prompt_values("전기기사", quiz, answers, 52, "- 주제 (high, 2회)")
    system, user = prompt.render(values)
    assert '"weaknesses"' in system.content and "한국어" in system.content
    assert "과목: 전기기사" in user.content
    assert "시험: 모의고사 (채점된 답안 100개, 오답 52개: 이 가운데 앞의 1개만 싣습니다)" \
        in user.content
    assert "- 주제 (high, 2회)" in user.content
    assert "문제: {course_title} 그대로 {0}" in user.content  # user text is never a template
    assert prompt.response_format is not None
    assert prompt.response_format.max_tokens == 1500


def test_a_payload_without_an_integer_quiz_id_is_a_final_bad_payload() -> None:
    for payload in ({}, {"quiz_id": "7"}, {"quiz_id": True}, {"quiz_id": 7.0}):
        with pytest.raises(FinalFailure) as caught:
            parse_payload(json.dumps(payload), w.WeaknessArgs)
        assert caught.value.code == "bad_payload"
        assert "quiz_id" in caught.value.message
    _, args = parse_payload('{"quiz_id": 7, "course_id": 3}', w.WeaknessArgs)
    assert args == w.WeaknessArgs(quiz_id=7)


def test_the_job_timeout_covers_a_repair_retry() -> None:
    settings = Settings(models=ModelSettings(llm_timeouts={"weakness_analysis": 40.0}))
    made = w.kind(settings, ModelClient())
    assert made.name == w.KIND and made.batch_size == 1
    assert made.timeout > 2 * 40


def test_every_value_of_the_weakness_prompt_is_clipped_and_the_worst_case_fits() -> None:
    """Course and quiz titles, subjects and scopes of a million characters, and every answer
    part at its longest, for as many answers as are sent: the prompt fits its budget."""
    from worker.kinds.weakness import CHARS, MAX_WRONG_ANSWERS

    prompt = load_prompt(w.KIND, 1, variables=w.VARIABLES)
    huge = "가" * 1_000_000
    quiz = {"kind": "quiz", "title": huge, "answers": 100}
    answers = [_answer(n, question_type=t, question_text=huge, choices=(huge,) * 4,
                       reference_answer=huge, answer_text=huge, explanation=huge,
                       subject=huge, scope=huge)
               for n in range(1, MAX_WRONG_ANSWERS + 1)
               for t in ["descriptive" if n % 2 else "multiple_choice"]]
    values = w.prompt_values(huge, quiz, answers, len(answers), "요약 " * 200)
    request = prompt.request(values, w.WeaknessAnalysis, w.DEFAULT_BUDGET)
    size = sum(len(m.content) for m in request.messages)
    assert size <= w.DEFAULT_BUDGET.prompt_chars
    assert huge not in request.messages[1].content
    assert "가" * max(CHARS.values()) not in request.messages[1].content


def test_a_stored_value_is_read_back_bounded() -> None:
    deep = "[" * 900 + "]" * 900  # decodes, but would not encode again inside the history
    for text, reason in ((deep, "levels deep"), ("[" * 5000 + "]" * 5000, "nested too deep"),
                         ('"' + "x" * (store.MAX_STORED_CHARS + 1) + '"', "too large")):
        value = store.read_stored(text)
        assert isinstance(value, store.Unreadable) and reason in value.reason
        entry = store.normalize(value)["history"][0]
        assert entry["unreadable"] == value.reason
        assert entry["excerpt"] == text[:store.EXCERPT_CHARS]
    assert store.read_stored('{"format": 1, "history": []}') == {"format": 1, "history": []}
    assert store.read_stored(None) is None
