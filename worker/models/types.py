"""The values that cross the model interface: requests, replies, results, usage, call context.

Job kinds build a CompletionRequest and get a CompletionResult; backends return a RawReply.
"""

from __future__ import annotations

import re
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from worker.job import Job

OutT = TypeVar("OutT", bound=BaseModel)

Role = Literal["system", "user", "assistant"]
# json_schema: OpenAI strict structured outputs; json_object_schema: llama.cpp's
# {"type": "json_object", "schema": …}; prompt: the schema goes into the system prompt.
JsonMode = Literal["json_schema", "json_object_schema", "prompt"]

_VALUE = ConfigDict(frozen=True, extra="forbid")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class Message(BaseModel):
    model_config = _VALUE

    role: Role
    content: str


class Usage(BaseModel):
    """Tokens as the server reported them; None where it reported nothing."""

    model_config = _VALUE

    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def __add__(self, other: Usage) -> Usage:
        def add(a: int | None, b: int | None) -> int | None:
            return None if a is None and b is None else (a or 0) + (b or 0)

        return Usage(
            prompt_tokens=add(self.prompt_tokens, other.prompt_tokens),
            completion_tokens=add(self.completion_tokens, other.completion_tokens),
        )


class CompletionRequest(BaseModel, Generic[OutT]):
    """One structured completion. max_tokens has no default on purpose: every caller
    decides its budget. timeout None means the configured timeout of the job kind."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    messages: tuple[Message, ...] = Field(min_length=1)
    output: type[OutT]
    max_tokens: int = Field(gt=0)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    timeout: float | None = Field(default=None, gt=0)


class RawReply(BaseModel):
    """What one backend round trip produced, before any parsing."""

    model_config = _VALUE

    text: str | None
    finish_reason: str | None
    refusal: str | None = None
    usage: Usage = Usage()
    model: str

    @field_validator("text", "refusal")
    @classmethod
    def _encodable(cls, value: str | None) -> str | None:
        # a lone surrogate (from a \ud800 escape) cannot be encoded as UTF-8: it would fail
        # the repair round that sends the reply back, and every write of it
        return None if value is None else _LONE_SURROGATE.sub("\ufffd", value)


class CompletionResult(BaseModel, Generic[OutT]):
    """A validated structured completion. latency and usage add up every round trip
    of the call (the first reply and, when it was unusable, the one retry)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    value: OutT
    raw_text: str
    finish_reason: str | None
    usage: Usage
    model: str
    backend: str
    latency_ms: float
    gate_wait_ms: float
    repaired: bool
    retried: bool


class EmbeddingResult(BaseModel):
    model_config = _VALUE

    vectors: tuple[tuple[float, ...], ...]
    model: str
    dimensions: int
    usage: Usage
    backend: str
    latency_ms: float
    gate_wait_ms: float


class CallContext(BaseModel):
    """Who a model call is for, recorded with it in queue.model_calls. job_id and
    attempt_id are None only outside jobs (a start-up probe, a benchmark)."""

    model_config = _VALUE

    kind: str
    job_id: int | None = None
    attempt_id: int | None = None
    prompt_version: int | None = None

    @classmethod
    def for_job(cls, job: Job, prompt_version: int | None = None) -> CallContext:
        return cls(kind=job.kind, job_id=job.id, attempt_id=job.attempt_id,
                   prompt_version=prompt_version)
