"""The claimed job as handlers see it, and the outcome the executor records for it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Status = Literal["pending", "completed", "failed", "skipped"]


@dataclass(frozen=True, slots=True)
class Job:
    """One claimed job: its row plus the number of this attempt."""

    id: int
    kind: str
    subject: str | None
    payload: dict[str, Any]
    priority: int
    max_attempts: int
    created_at: datetime
    attempt: int
    attempt_id: int | None
    # the payload validated against the kind's payload_model (None for a kind without one)
    args: Any = None
    # the claim's receipt for this job: what recording, finishing and giving back its
    # attempt require (queue.claim)
    receipt: str = field(default="", repr=False)

    @property
    def last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts


@dataclass(slots=True)
class Outcome:
    """What finish_jobs writes for one job: the job's queue status (`pending` means retry
    after `retry_in` seconds) and the outcome recorded on its attempt row."""

    status: Status
    # queue.attempts.outcome: completed, retry, failed, skipped, superseded, deferred (a
    # budget held the job back; not counted), snoozed (a 429; free up to a cap), released,
    # worker_lost
    attempt_outcome: str
    error_code: str | None = None
    error_message: str | None = None
    retry_in: float = 0.0
    result: dict[str, Any] | None = field(default=None)

    @classmethod
    def completed(cls, result: dict[str, Any] | None = None) -> Outcome:
        return cls("completed", "completed", result=result)
