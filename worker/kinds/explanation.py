"""Explanations for multiple-choice questions: evidence, the envelope, the guard, the cap.

Written back only for the content the model saw, and only if its answer matches the key.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from worker.errors import FinalFailure, GuardFailed, InputChanged, SkipJob
from worker.job import Job, Outcome
from worker.kinds import evidence
from worker.kinds.textcap import cap
from worker.models.client import ModelClient
from worker.models.settings import ModelSettings
from worker.models.types import CallContext, CompletionRequest
from worker.prompts import Prompt, load_prompt
from worker.queries import q
from worker.registry import JobConnection, JobKind
from worker.textsafe import storable

KIND = "explanation"
DEFAULT_MAX_TOKENS = 900


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


class Explanations:
    def __init__(self, client: ModelClient, prompt: Prompt, reranker: evidence.Reranker,
                 limits: evidence.EvidenceSettings | None = None) -> None:
        self.client = client
        self.prompt = prompt
        self.reranker = reranker
        self.limits = limits or evidence.EvidenceSettings()

    async def handle(self, conn: JobConnection, job: Job) -> dict[str, Any]:
        args: ExplanationArgs = job.args
        qid = args.question_id
        row = await (await conn.execute(q("explanation_question"), {"id": qid})).fetchone()
        if row is None:
            raise SkipJob("missing", f"question {qid} does not exist")
        if row["deleted"]:
            raise SkipJob("deleted", f"question {qid} was deleted")
        problem = _problem(row)
        if problem:
            raise FinalFailure("bad_input", f"question {qid}: {problem}")
        if (row["ai_explanation_status"] == "ready" and row["has_text"]
                and not args.regenerate):
            return {"cached": True, "note": "already ready; no model call"}

        embedding = row["embedding"] or await self._embed(row["embedding_text"], job)
        found = await evidence.gather(conn, row, embedding, self.reranker, self.limits)
        if found.empty():
            error = SkipJob("evidence_missing",
                            f"no study material or explained question in course "
                            f"{row['course_id']} to ground question {qid} in")
            error.details = {"evidence": found.record()}
            raise error

        messages = self.prompt.render({
            "question_text": row["question_text"], "evidence": found.prompt_text(),
            **{f"choice_{n}": row[f"choice_{n}"] for n in range(1, 5)},
        })
        budget = self.prompt.response_format
        result = await self.client.complete(
            CompletionRequest[Envelope](
                messages=messages, output=Envelope,
                max_tokens=(budget.max_tokens if budget and budget.max_tokens
                            else DEFAULT_MAX_TOKENS),
                temperature=budget.temperature if budget and budget.temperature else 0.0),
            CallContext.for_job(job, prompt_version=self.prompt.version))
        envelope = result.value

        current = await (await conn.execute(q("lock_question_for_explanation"),
                                            {"id": qid})).fetchone()
        if current is None or current["deleted"]:
            raise SkipJob("deleted", f"question {qid} was deleted while it was explained")
        if current["content_md5"] != row["content_md5"]:
            raise InputChanged("input_changed", f"question {qid} was edited while it was "
                                                "explained; explaining the new version")
        facts: dict[str, Any] = {
            "answer_choice": envelope.answer_choice,
            "correct_choice": current["correct_choice"],
            "confidence": envelope.confidence,
            "original_length": len(envelope.explanation_md),
            "model": result.model, "prompt_version": self.prompt.version,
            "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens,
            "repaired": result.repaired, "retried": result.retried,
            "evidence": found.record(),
        }
        if envelope.answer_choice != current["correct_choice"]:
            guard = GuardFailed("guard_fail", f"the model answered {envelope.answer_choice}, "
                                              f"the key is {current['correct_choice']} "
                                              f"(confidence {envelope.confidence})")
            guard.details = facts
            raise guard
        text, capped = cap(envelope.explanation_md)
        await conn.execute(q("write_explanation"),
                           {"id": qid, "text": text, "model": result.model})
        return {**facts, "saved_length": len(text), "capped": capped}

    async def _embed(self, text: str, job: Job) -> str:
        """The question has no ready vector yet: embed it now for the evidence search."""
        result = await self.client.embed([text], CallContext.for_job(job), role="query")
        return "[" + ",".join(f"{x:.8g}" for x in result.vectors[0]) + "]"

    async def on_final_failure(self, conn: JobConnection, job: Job, outcome: Outcome) -> None:
        if job.args is None:  # refused as bad_payload: no question to mark
            return
        qid = job.args.question_id
        if outcome.status == "failed":
            await conn.execute(q("mark_explanation"), {"id": qid, "status": "failed"})
        elif outcome.error_code == "evidence_missing":
            await conn.execute(q("mark_explanation"), {"id": qid, "status": "skipped"})


def kind(client: ModelClient, settings: ModelSettings,
         reranker: evidence.Reranker | None = None) -> JobKind:
    """The explanation kind. Its job timeout covers an embedding for the evidence search
    and two model round trips (the model layer's one repair retry)."""
    explanations = Explanations(client, load_prompt(KIND),
                                reranker or evidence.build_reranker(evidence.RerankSettings()))
    timeout = 2 * settings.timeout_for(KIND) + settings.timeout_for("embedding") + 10
    return JobKind(KIND, handler=explanations.handle, payload_model=ExplanationArgs,
                   on_final_failure=explanations.on_final_failure,
                   concurrency=2, timeout=timeout)
