"""Course weakness analysis: a graded quiz's wrong answers in, the course's merged analysis out.

Only the new wrong answers and a bounded summary of the existing analysis reach the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from psycopg.types.json import Jsonb
from pydantic import AfterValidator, BaseModel, ConfigDict, StrictInt, field_validator

from worker.config import Settings
from worker.errors import InputChanged, SkipJob
from worker.job import Job
from worker.kinds.textcap import clip
from worker.kinds.weakness_store import (
    TEXT_CHARS,
    TOPIC_CHARS,
    merge,
    normalize,
    read_stored,
    severity_of,
    summarize,
)
from worker.models.client import ModelClient
from worker.models.types import CallContext, CompletionResult
from worker.prompts import Budget, Prompt, prompt_chars, prompt_for
from worker.queries import q
from worker.registry import JobConnection, JobKind
from worker.textsafe import storable

KIND = "weakness_analysis"
# what one prompt may carry: a 100-question mock exam can have 60 wrong answers, and the
# explanation text is the longest part of each
MAX_WRONG_ANSWERS = 40
CHARS = {"question": 600, "choice": 200, "reference": 600, "answer": 600, "explanation": 400,
         "label": 80, "title": 120}
# per analysis, and in the course-level aggregate
MAX_WEAKNESSES, MAX_SUGGESTIONS = 10, 8
# the prompt file's response_format may set the completion's limits; the prompt is at most
# MAX_WRONG_ANSWERS answers of clipped parts (CHARS), the summary and the instructions
DEFAULT_BUDGET = Budget(max_tokens=1500, temperature=0.2, prompt_chars=110_000)
VARIABLES = ("course_title", "quiz_label", "answered", "wrong_count", "wrong_answers",
             "existing_summary")

Severity = Literal["high", "medium", "low"]
_CIRCLED = "①②③④"




def _clean(limit: int) -> AfterValidator:
    def check(value: str) -> str:
        # a NUL or a lone surrogate from the model would fail the write of the whole merge
        value = " ".join(storable(value).split())
        if not value:
            raise ValueError("must not be empty")
        return clip(value, limit)

    return AfterValidator(check)




# -- what the model returns ------------------------------------------------------------------


class Weakness(BaseModel):
    model_config = ConfigDict(frozen=True)

    topic: Annotated[str, _clean(TOPIC_CHARS)]
    severity: Severity
    evidence: Annotated[str, _clean(TEXT_CHARS)]
    # the numbers ([1], [2] …) of the wrong answers that show this weakness
    questions: list[int]

    @field_validator("severity", mode="before")
    @classmethod
    def _severity(cls, value: object) -> object:
        return severity_of(value) or value


class Suggestion(BaseModel):
    model_config = ConfigDict(frozen=True)

    text: Annotated[str, _clean(TEXT_CHARS)]
    topics: list[str]


class WeaknessAnalysis(BaseModel):
    model_config = ConfigDict(frozen=True)

    weaknesses: list[Weakness]
    suggestions: list[Suggestion]


# -- what the model is given -----------------------------------------------------------------


def _number(value: Decimal | float | int | None) -> str:
    if value is None:
        return "?"
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return f"{value:g}"


@dataclass(frozen=True)
class WrongAnswer:
    """One wrong answer as the weakness_wrong_answers query returns it."""

    question_id: int
    question_type: str
    question_text: str
    choices: tuple[str | None, ...]
    correct_choice: int | None
    reference_answer: str | None
    explanation: str | None
    subject: str | None
    scope: str | None
    selected_choice: int | None
    answer_text: str | None
    unsure: bool
    score: Decimal | None
    max_score: Decimal | None

    @classmethod
    def of(cls, row: dict[str, Any]) -> WrongAnswer:
        return cls(
            question_id=row["question_id"], question_type=row["question_type"],
            question_text=row["question_text"] or "",
            choices=(row["choice_1"], row["choice_2"], row["choice_3"], row["choice_4"]),
            correct_choice=row["correct_choice"], reference_answer=row["reference_answer"],
            explanation=row["explanation"], subject=row["subject"], scope=row["scope"],
            selected_choice=row["selected_choice"], answer_text=row["answer_text"],
            unsure=bool(row["unsure"]), score=row["score"], max_score=row["max_score"],
        )

    def render(self, number: int) -> str:
        descriptive = self.question_type == "descriptive"
        head = [f"[{number}] {'서술형' if descriptive else '객관식'}"]
        head += [f"{label}: {clip(value, CHARS['label'])}"
                 for label, value in (("과목", self.subject), ("범위", self.scope)) if value]
        lines = [" | ".join(head), f"문제: {clip(self.question_text, CHARS['question'])}"]
        if descriptive:
            if self.reference_answer:
                lines.append(f"모범 답안: {clip(self.reference_answer, CHARS['reference'])}")
            answer = (self.answer_text or "").strip()
            lines.append(f"학습자 답안: {clip(answer, CHARS['answer']) if answer else '(무응답)'}")
            lines.append(f"점수: {_number(self.score)} / {_number(self.max_score)}")
        else:
            lines.append("보기: " + " ".join(
                f"{_CIRCLED[i]} {clip(c, CHARS['choice'])}"
                for i, c in enumerate(self.choices) if c is not None))
            lines.append(f"정답: {self._choice(self.correct_choice)}")
            picked = self._choice(self.selected_choice) if self.selected_choice else "(무응답)"
            lines.append(f"학습자 답: {picked}{' (헷갈림 표시)' if self.unsure else ''}")
        if self.explanation:
            lines.append(f"해설: {clip(self.explanation, CHARS['explanation'])}")
        return "\n".join(lines)

    @staticmethod
    def _choice(number: int | None) -> str:
        return _CIRCLED[number - 1] if number and 1 <= number <= 4 else str(number)


def render_wrong_answers(answers: list[WrongAnswer]) -> str:
    return "\n\n".join(answer.render(i) for i, answer in enumerate(answers, 1))


def ground(analysis: WeaknessAnalysis, answers: list[WrongAnswer]
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    """Tie each weakness to the questions it cites. A weakness that cites none of the wrong
    answers sent has no evidence in them and is dropped."""
    weaknesses: list[dict[str, Any]] = []
    unknown = unsupported = 0
    for item in analysis.weaknesses[:MAX_WEAKNESSES]:
        ids: list[int] = []
        for number in item.questions:
            if 1 <= number <= len(answers):
                if answers[number - 1].question_id not in ids:
                    ids.append(answers[number - 1].question_id)
            else:
                unknown += 1
        if not ids:
            unsupported += 1
            continue
        weaknesses.append({"topic": item.topic, "severity": item.severity,
                           "evidence": item.evidence, "question_ids": ids})
    suggestions = [{"text": s.text,
                    "topics": [clip(t, TOPIC_CHARS) for t in s.topics if t.strip()][:5]}
                   for s in analysis.suggestions[:MAX_SUGGESTIONS]]
    return weaknesses, suggestions, {"unknown_question_refs": unknown,
                                     "unsupported_weaknesses_dropped": unsupported}


def prompt_values(course_title: str, quiz: dict[str, Any], answers: list[WrongAnswer],
                  total_wrong: int, summary: str) -> dict[str, object]:
    label = "모의고사" if quiz["kind"] == "mock_exam" else "퀴즈"
    wrong = f"{total_wrong}개"
    if len(answers) < total_wrong:
        wrong += f": 이 가운데 앞의 {len(answers)}개만 싣습니다"
    title = clip(quiz["title"], CHARS["title"]) if quiz.get("title") else None
    return {"course_title": clip(course_title, CHARS["title"]),
            "quiz_label": f"{label} '{title}'" if title else label,
            "answered": quiz["answers"], "wrong_count": wrong,
            "wrong_answers": render_wrong_answers(answers), "existing_summary": summary}


# -- the job ---------------------------------------------------------------------------------


class WeaknessArgs(BaseModel):
    """The payload: the graded quiz whose wrong answers are analysed."""

    model_config = ConfigDict(frozen=True)

    quiz_id: StrictInt


class Analyzer:
    def __init__(self, client: ModelClient, prompt: Prompt) -> None:
        self.client = client
        self.prompt = prompt

    async def run(self, conn: JobConnection, job: Job) -> dict[str, Any]:
        """load → ask → ground → guard → write."""
        args: WeaknessArgs = job.args
        quiz, wrong, left_out = await load(conn, args.quiz_id)
        info: dict[str, Any] = {
            "quiz_id": quiz["id"], "course_id": quiz["course_id"], "answers": quiz["answers"],
            "wrong_answers_total": len(wrong), "deleted_questions_left_out": left_out}
        if not wrong:
            return {**info, "analyzed": False, "reason": "no_wrong_answers", "model_calls": 0}
        sent = wrong[:MAX_WRONG_ANSWERS]
        result, facts = await self.ask(quiz, sent, len(wrong), job)
        weaknesses, suggestions, grounding = ground(result.value, sent)
        info |= {**facts, "weaknesses_found": len(weaknesses),
                 "suggestions_found": len(suggestions), **grounding}
        if not weaknesses and not suggestions:
            # nothing usable: the stored analysis is left exactly as it is
            return {**info, "stored": False, "reason": "empty_analysis"}
        existing = await guard(conn, quiz)
        entry = {"source": "quiz", "quiz_id": quiz["id"], "quiz_kind": quiz["kind"],
                 "job_id": job.id, "analyzed_at": datetime.now(UTC).isoformat(timespec="seconds"),
                 "prompt_version": self.prompt.version, "model": result.model,
                 "wrong_answers": len(sent), "weaknesses": weaknesses,
                 "suggestions": suggestions, "superseded_by_job": None}
        return {**info, **await write(conn, quiz["course_id"], existing, entry)}

    async def ask(self, quiz: dict[str, Any], sent: list[WrongAnswer], total_wrong: int,
                  job: Job) -> tuple[CompletionResult[WeaknessAnalysis], dict[str, Any]]:
        """The model's analysis of the wrong answers sent, with a bounded summary of the
        course's stored analysis; and what the job records about the call."""
        summary, named = summarize(normalize(read_stored(quiz["existing"])))
        request = self.prompt.request(
            prompt_values(quiz["course_title"], quiz, sent, total_wrong, summary),
            WeaknessAnalysis, DEFAULT_BUDGET)
        result = await self.client.complete(
            request, CallContext.for_job(job, prompt_version=self.prompt.version))
        return result, {
            "analyzed": True, "prompt_version": self.prompt.version,
            "wrong_answers": len(sent), "summary_topics": named,
            "prompt_chars": prompt_chars(request.messages),
            "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens, "model": result.model,
            "backend": result.backend, "repaired": result.repaired, "retried": result.retried}


async def load(conn: JobConnection, quiz_id: int
               ) -> tuple[dict[str, Any], list[WrongAnswer], int]:
    """The graded quiz, its wrong answers, and how many were left out because their question
    was deleted; a quiz that cannot be analysed ends the job here."""
    quiz = await (await conn.execute(q("weakness_quiz"), {"quiz_id": quiz_id})).fetchone()
    if quiz is None:
        raise SkipJob("quiz_missing", f"quiz {quiz_id} does not exist")
    if quiz["course_found"] is None:
        raise SkipJob("course_missing", f"course {quiz['course_id']} of quiz {quiz_id} "
                                        "does not exist")
    if quiz["status"] != "graded":
        raise SkipJob("quiz_not_graded", f"quiz {quiz_id} is {quiz['status']} now; it is "
                                         "analysed again when it is graded")
    rows = await (await conn.execute(q("weakness_wrong_answers"), {"quiz_id": quiz_id})
                  ).fetchall()
    wrong = [WrongAnswer.of(row) for row in rows if not row["deleted"]]
    return quiz, wrong, len(rows) - len(wrong)


async def guard(conn: JobConnection, quiz: dict[str, Any]) -> str | None:
    """Lock the course and check the quiz is graded as it was when `load` read it (a regrade
    meanwhile reruns the job on the new grading). Returns the stored analysis, as text."""
    locked = await (await conn.execute(q("weakness_lock_course"),
                                       {"course_id": quiz["course_id"]})).fetchone()
    if locked is None:
        raise SkipJob("course_missing", f"course {quiz['course_id']} was deleted while "
                                        f"quiz {quiz['id']} was analysed")
    now = await (await conn.execute(q("weakness_grading"), {"quiz_id": quiz["id"]})).fetchone()
    if now is None or now["grading_md5"] != quiz["grading_md5"]:
        raise InputChanged("input_changed", f"quiz {quiz['id']} was regraded while it was "
                                            "analysed; analysing the new grading")
    existing: str | None = locked["existing"]
    return existing


async def write(conn: JobConnection, course_id: int, existing: str | None,
                entry: dict[str, Any]) -> dict[str, Any]:
    """Merge the analysis into the course's stored one; what the job records about it."""
    merged, superseded = merge(read_stored(existing), entry)
    await conn.execute(q("weakness_store"), {"course_id": course_id, "analysis": Jsonb(merged)})
    return {"stored": True, "analyzed_at": entry["analyzed_at"],
            "history_entries": len(merged["history"]), "superseded": superseded}


def kind(settings: Settings, client: ModelClient) -> JobKind:
    """The job kind; its prompt version (PROMPT_VERSION[_WEAKNESS_ANALYSIS]) is fixed here,
    at start-up, so a bad prompt file stops the worker instead of failing jobs."""
    analyzer = Analyzer(client, prompt_for(KIND, settings.prompts, VARIABLES))
    # batch_size 1: the course row stays locked from the merge to the claim's commit, and a
    # batch would hold it through the model calls of the jobs after it. The timeout: one round
    # trip may be followed by a repair retry, each bounded by the model timeout; the rest
    # covers the gate wait, the reads and the merge
    return JobKind(KIND, handler=analyzer.run, payload_model=WeaknessArgs, batch_size=1,
                   concurrency=2,
                   timeout=2 * settings.models.timeout_for(KIND) + 15)
