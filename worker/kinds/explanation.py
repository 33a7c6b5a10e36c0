"""Explanations for multiple-choice questions: evidence, the envelope, the guard, the cap.

Written back only for the content the model saw, and only if its answer matches the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

from pgvector import Vector
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from worker.config import EvidenceSettings, Settings
from worker.errors import FinalFailure, GuardFailed, InputChanged, SkipJob
from worker.job import Job, Outcome
from worker.kinds import evidence
from worker.kinds.markdown_guard import declared_answers, sanitize
from worker.kinds.textcap import cap, clip
from worker.models.client import ModelClient
from worker.models.types import CallContext, CompletionResult
from worker.prompts import Budget, Prompt, prompt_for
from worker.queries import q
from worker.registry import JobConnection, JobKind
from worker.textsafe import storable

KIND = "explanation"
# the prompt file's response_format may set the completion's limits; the prompt itself is
# at most the question, its choices, the evidence (EvidenceSettings) and the instructions
DEFAULT_BUDGET = Budget(max_tokens=900, temperature=0.0, prompt_chars=24_000)
VERIFY_BUDGET = Budget(max_tokens=20, temperature=0.0, prompt_chars=24_000)
VERIFY_KIND = "explanation_verify"
# what a prompt file may use
VARIABLES = ("question_text", "choice_1", "choice_2", "choice_3", "choice_4", "correct_choice",
             "evidence")
# what of a question the prompt shows
QUESTION_CHARS, CHOICE_CHARS = 2_000, 500


class Envelope(BaseModel):
    """What the model must answer with."""

    model_config = ConfigDict(extra="ignore")

    answer_choice: int = Field(ge=1, le=4)
    explanation_md: str = Field(min_length=1)
    confidence: str = Field(pattern="^(high|medium|low)$")

    @field_validator("explanation_md")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = storable(value).strip()  # a NUL from the model must not fail the write
        if not value:
            raise ValueError("the explanation is empty")
        return value


class BlindAnswer(BaseModel):
    """What the verification prompt asks for: the model's own answer, without the key."""

    model_config = ConfigDict(extra="ignore")

    answer_choice: int = Field(ge=1, le=4)


class ExplanationArgs(BaseModel):
    """The payload: the question, and whether a ready explanation is made again."""

    model_config = ConfigDict(frozen=True)

    question_id: StrictInt
    regenerate: bool = False


def _problem(row: dict[str, Any]) -> str | None:
    """Why this question cannot get an explanation, if it cannot."""
    if row["question_type"] != "multiple_choice":
        return "only multiple-choice questions get AI explanations"
    blank = [str(n) for n in range(1, 5) if not (row[f"choice_{n}"] or "").strip()]
    if blank:
        return f"choice(s) {', '.join(blank)} are empty"
    if row["correct_choice"] not in (1, 2, 3, 4):
        return f"the answer key {row['correct_choice']!r} is not one of 1-4"
    if not (row["question_text"] or "").strip():
        return "the question text is empty"
    return None


def _cached(row: dict[str, Any], args: ExplanationArgs) -> bool:
    return bool(row["ai_explanation_status"] == "ready" and row["has_text"]
                and not args.regenerate)


async def load(conn: JobConnection, qid: int) -> dict[str, Any]:
    """The question as it is now; a question that cannot be explained ends the job here."""
    row = await (await conn.execute(q("explanation_question"), {"id": qid})).fetchone()
    if row is None:
        raise SkipJob("missing", f"question {qid} does not exist")
    if row["deleted"]:
        raise SkipJob("deleted", f"question {qid} was deleted")
    problem = _problem(row)
    if problem:
        raise FinalFailure("bad_input", f"question {qid}: {problem}")
    return row


async def guard(conn: JobConnection, row: dict[str, Any], facts: dict[str, Any],
                answer: Envelope) -> dict[str, Any]:
    """Lock the question and check the answer against the key it has now: an edit since
    `load` means the answer is about other content. Returns the facts with the key."""
    qid = row["id"]
    current = await (await conn.execute(q("lock_question_for_explanation"),
                                        {"id": qid})).fetchone()
    if current is None or current["deleted"]:
        raise SkipJob("deleted", f"question {qid} was deleted while it was explained")
    if current["content_md5"] != row["content_md5"]:
        raise InputChanged("input_changed", f"question {qid} was edited while it was "
                                            "explained; explaining the new version")
    key = current["correct_choice"]
    facts = {**facts, "correct_choice": key}
    others = sorted(declared_answers(answer.explanation_md) - {key})
    if answer.answer_choice != key:
        _refuse("answer_choice", facts, f"the model answered {answer.answer_choice}, the key "
                                        f"is {key} (confidence {answer.confidence})")
    if others:
        _refuse("text_names_other", facts,
                f"the explanation's text names choice {', '.join(map(str, others))} as the "
                f"answer, the key is {key} (its answer_choice field says "
                f"{answer.answer_choice})")
    return facts


def _refuse(guard: str, facts: dict[str, Any], problem: str) -> NoReturn:
    """A guard_fail; the job's result names which guard refused (`guard`), for operators
    and for `worker eval explanations`."""
    failed = GuardFailed("guard_fail", problem)
    failed.details = {**facts, "guard": guard}
    raise failed


async def write(conn: JobConnection, qid: int, answer: Envelope, model: str,
                facts: dict[str, Any]) -> dict[str, Any]:
    """Publish the explanation, without what reaches outside the text and capped, and
    return the job's result."""
    text, removed = sanitize(answer.explanation_md)
    if not text:
        _refuse("nothing_left", facts, "nothing of the explanation is left once images, "
                                       f"HTML and links are taken out ({', '.join(removed)})")
    text, capped = cap(text)
    await conn.execute(q("write_explanation"), {"id": qid, "text": text, "model": model})
    return {**facts, "saved_length": len(text), "capped": capped, "removed": removed}


def _question_values(row: dict[str, Any], found: evidence.Evidence) -> dict[str, object]:
    """The question as a prompt shows it, each part clipped, and the evidence."""
    return {"question_text": clip(row["question_text"], QUESTION_CHARS),
            "evidence": found.prompt_text(),
            **{f"choice_{n}": clip(row[f"choice_{n}"], CHOICE_CHARS) for n in range(1, 5)}}


def _facts(answer: CompletionResult[Envelope], prompt: Prompt,
           found: evidence.Evidence) -> dict[str, Any]:
    """What the job records about the model's answer, written back or not."""
    return {
        "answer_choice": answer.value.answer_choice,
        "confidence": answer.value.confidence,
        "original_length": len(answer.value.explanation_md),
        "model": answer.model, "prompt_version": prompt.version,
        "prompt_tokens": answer.usage.prompt_tokens,
        "completion_tokens": answer.usage.completion_tokens,
        "repaired": answer.repaired, "retried": answer.retried,
        "evidence": found.record(),
    }


@dataclass(frozen=True)
class Explanations:
    client: ModelClient
    prompt: Prompt
    reranker: evidence.Reranker
    limits: EvidenceSettings
    # verification mode: a blind solve (no key) whose answer is compared with the key
    verify: Prompt | None = None
    block_unverified: bool = False

    async def handle(self, conn: JobConnection, job: Job) -> dict[str, Any]:
        args: ExplanationArgs = job.args
        row = await load(conn, args.question_id)
        if _cached(row, args):
            return {"cached": True, "note": "already ready; no model call"}
        found = await self.gather(conn, row, job)
        answer = await self.ask(row, found, job)
        facts = _facts(answer, self.prompt, found) | await self.solve_blind(row, found, job)
        facts = await guard(conn, row, facts, answer.value)
        return await write(conn, row["id"], answer.value, answer.model, facts)

    async def gather(self, conn: JobConnection, row: dict[str, Any], job: Job) -> evidence.Evidence:
        """The course's evidence for the question; none at all skips the job."""
        vector = row["embedding"]
        if vector is None:  # no ready vector yet: embed the question now for the search
            result = await self.client.embed([row["embedding_text"]], CallContext.for_job(job),
                                             role="query")
            vector = Vector(list(result.vectors[0]))
        found = await evidence.gather(conn, row, vector, self.reranker, self.limits)
        if found.empty():
            error = SkipJob("evidence_missing",
                            f"no study material or explained question in course "
                            f"{row['course_id']} to ground question {row['id']} in")
            error.details = {"evidence": found.record()}
            raise error
        return found

    async def ask(self, row: dict[str, Any], found: evidence.Evidence, job: Job
                  ) -> CompletionResult[Envelope]:
        """The model's answer: the question, its choices, the key (for a prompt version that
        shows it: v2 does, v1 has the model solve blind) and the evidence."""
        request = self.prompt.request(
            _question_values(row, found) | {"correct_choice": row["correct_choice"]},
            Envelope, DEFAULT_BUDGET)
        return await self.client.complete(
            request, CallContext.for_job(job, prompt_version=self.prompt.version))

    async def solve_blind(self, row: dict[str, Any], found: evidence.Evidence, job: Job
                          ) -> dict[str, Any]:
        """Verification mode: the model's own answer without the key, compared with the
        key; a disagreement is recorded (`verified: false`) or, with `block`, refused
        (`unverified`, final). Nothing when the mode is off."""
        if self.verify is None:
            return {}
        request = self.verify.request(_question_values(row, found), BlindAnswer,
                                      VERIFY_BUDGET)
        result = await self.client.complete(
            request, CallContext.for_job(job, prompt_version=self.verify.version))
        blind, key = result.value.answer_choice, row["correct_choice"]
        facts = {"blind_answer": blind, "verified": blind == key}
        if blind != key and self.block_unverified:
            refused = GuardFailed("unverified", f"solved blind, the model answered {blind}; "
                                                f"the key is {key} (not published)")
            refused.details = facts
            raise refused
        return facts

    async def on_final_failure(self, conn: JobConnection, job: Job, outcome: Outcome) -> None:
        if job.args is None:  # refused as bad_payload: no question to mark
            return
        qid = job.args.question_id
        if outcome.status == "failed":
            await conn.execute(q("mark_explanation"), {"id": qid, "status": "failed"})
        elif outcome.error_code == "evidence_missing":
            await conn.execute(q("mark_explanation"), {"id": qid, "status": "skipped"})


def kind(settings: Settings, client: ModelClient) -> JobKind:
    """The explanation kind. Its job timeout covers an embedding for the evidence search
    and two model round trips (the model layer's one repair retry), twice with verification."""
    verify = (None if settings.explanation_verify == "off"
              else prompt_for(VERIFY_KIND, settings.prompts, VARIABLES))
    explanations = Explanations(client, prompt_for(KIND, settings.prompts, VARIABLES),
                                evidence.build_reranker(settings.rerank), settings.evidence,
                                verify, block_unverified=settings.explanation_verify == "block")
    models = settings.models
    calls = 2 if verify is None else 4
    timeout = calls * models.timeout_for(KIND) + models.timeout_for("embedding") + 10
    return JobKind(KIND, handler=explanations.handle, payload_model=ExplanationArgs,
                   on_final_failure=explanations.on_final_failure,
                   concurrency=2, timeout=timeout)
