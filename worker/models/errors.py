"""Model-call failures as the queue's own exception types, so worker/retry.py classifies them.

Retryable faults are RetryLater (a 429's Retry-After becomes its delay); the rest FinalFailure.
"""

from __future__ import annotations

from typing import Final

from worker.errors import Deferred, FinalFailure, RetryLater, Snoozed

# How much of an unusable reply is kept for the operator to read.
RAW_EXCERPT_CHARS: Final = 1000
# The reason is clipped too, so reason + excerpt fit in the job's error_message (2000 chars).
REASON_CHARS: Final = 800

RETRYABLE_CODES: Final = frozenset(
    {"timeout", "rate_limited", "server_error", "connection_error", "parse_fail",
     "budget_exceeded"}
)
FINAL_CODES: Final = frozenset(
    {"quota_exhausted", "bad_request", "refused", "content_filter", "truncated"}
)


def excerpt(raw: str | None) -> str | None:
    return None if raw is None else raw[:RAW_EXCERPT_CHARS]


def _message(reason: str, raw_excerpt: str | None) -> str:
    reason = reason if len(reason) <= REASON_CHARS else reason[: REASON_CHARS - 1] + "…"
    if raw_excerpt is None:
        return reason
    return f"{reason}; raw reply (first {RAW_EXCERPT_CHARS} chars): {raw_excerpt!r}"


def _details(reason: str, raw_excerpt: str | None, backend: str | None,
             model: str | None) -> dict[str, object]:
    """What the job keeps in its result: the reason and, for an unusable reply, its start."""
    found = {"reason": reason[:REASON_CHARS], "raw_excerpt": raw_excerpt, "backend": backend,
             "model": model}
    return {key: value for key, value in found.items() if value is not None}


class ModelRetryable(RetryLater):
    """A model call that may work later: timeout, 429, 5xx, connection, unusable output."""

    def __init__(self, code: str, reason: str, delay: float | None = None, *,
                 raw: str | None = None, backend: str | None = None,
                 model: str | None = None) -> None:
        if code not in RETRYABLE_CODES:
            raise ValueError(f"{code!r} is not a retryable model error code")
        self.reason, self.raw_excerpt = reason, excerpt(raw)
        super().__init__(code, _message(reason, self.raw_excerpt), delay)
        self.details = _details(reason, self.raw_excerpt, backend, model)


class ModelDeferred(ModelRetryable, Deferred):
    """A call not made because its kind used today's token budget: due when the window
    ends, without using an attempt."""


class ModelSnoozed(ModelRetryable, Snoozed):
    """A 429 (not an exhausted quota): the server's retry-after, without using an
    attempt."""


class ModelFinal(FinalFailure):
    """A model call that the same request cannot fix: quota, bad request, refusal, filter,
    or a reply cut off at max_tokens."""

    def __init__(self, code: str, reason: str, *, raw: str | None = None,
                 backend: str | None = None, model: str | None = None) -> None:
        if code not in FINAL_CODES:
            raise ValueError(f"{code!r} is not a final model error code")
        self.reason, self.raw_excerpt = reason, excerpt(raw)
        super().__init__(code, _message(reason, self.raw_excerpt))
        self.details = _details(reason, self.raw_excerpt, backend, model)
