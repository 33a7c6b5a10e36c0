"""Retry policy: which failures are final, and how long a retryable one waits.

Exponential backoff with jitter, unless the failure carries a retry-after hint.
"""

from __future__ import annotations

import random

import psycopg

from worker import dberrors
from worker.errors import (
    Deferred,
    FinalFailure,
    InputChanged,
    JobError,
    RetryLater,
    SkipJob,
    Snoozed,
)
from worker.job import Job, Outcome
from worker.textsafe import storable, storable_tree

MAX_MESSAGE = 2000


def backoff(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): equal jitter."""
    ceiling = min(cap, base * 2.0 ** max(attempt - 1, 0))
    jitter: float = (rng or random).uniform(0, ceiling / 2)
    return ceiling / 2 + jitter


def _clip(message: str) -> str:
    # model and server text can hold NUL bytes or an echoed API key: neither is stored
    message = storable(message)
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


def classify(exc: BaseException, job: Job, base: float, cap: float) -> Outcome:
    """Turn what a handler raised into the outcome recorded for the job; a JobError's
    details become the job's result."""
    outcome = _classify(exc, job, base, cap)
    details = storable_tree(getattr(exc, "details", None))
    if isinstance(details, dict) and details:
        outcome.result = details
    return outcome


def _classify(exc: BaseException, job: Job, base: float, cap: float) -> Outcome:
    if isinstance(exc, InputChanged):
        return Outcome("pending", "superseded", exc.code, _clip(exc.message))
    if isinstance(exc, SkipJob):
        return Outcome("skipped", "skipped", exc.code, _clip(exc.message))
    if isinstance(exc, FinalFailure):
        return Outcome("failed", "failed", exc.code, _clip(exc.message))
    if isinstance(exc, Deferred | Snoozed):
        delay = exc.delay if exc.delay is not None else backoff(job.attempt, base, cap)
        return Outcome("pending", "deferred" if isinstance(exc, Deferred) else "snoozed",
                       exc.code, _clip(exc.message), retry_in=max(delay, 0.0))
    if isinstance(exc, JobError):
        code, message = exc.code, exc.message
    elif isinstance(exc, psycopg.OperationalError):
        # a deadlock, lock timeout or cancelled statement of this job on a healthy connection
        code, message = dberrors.error_code(exc), dberrors.describe(exc)
    elif isinstance(exc, TimeoutError):
        code, message = "timeout", "the job ran past its timeout"
    else:
        code, message = "unknown_error", f"{type(exc).__name__}: {exc}"
    if job.last_attempt:
        return Outcome("failed", "failed", code, _clip(message))
    if isinstance(exc, RetryLater) and exc.delay is not None:
        delay = max(exc.delay, 0.0)
    else:
        delay = backoff(job.attempt, base, cap)
    return Outcome("pending", "retry", code, _clip(message), retry_in=delay)
