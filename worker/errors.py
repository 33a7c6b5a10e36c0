"""The exceptions of the worker: one base class, specific data-carrying subclasses.

Handlers raise the job-outcome exceptions; the executor turns them into queue outcomes.
"""

from __future__ import annotations


class WorkerError(Exception):
    """Base class of every exception this package raises on purpose."""


class ConfigError(WorkerError):
    """A start-up problem an operator must fix: bad settings, missing extension, old schema."""


class MigrationError(WorkerError):
    """A migration could not be applied, or an applied one was edited afterwards."""


class JobError(WorkerError):
    """A job attempt ended without success. `code` becomes the job's error_code."""

    retryable: bool = True

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        # structured facts kept on the job (queue.jobs.result) next to error_code/message
        self.details: dict[str, object] | None = None


class RetryLater(JobError):
    """Retry after `delay` seconds (a server's Retry-After), or after the usual backoff."""

    def __init__(self, code: str, message: str, delay: float | None = None) -> None:
        super().__init__(code, message)
        self.delay = delay


class Deferred(RetryLater):
    """Held back by a budget the operator set, not failing: due again after `delay`
    seconds, and it uses no attempt (its attempt is closed as `deferred`)."""


class Snoozed(RetryLater):
    """The model server asked us to wait (a 429): due again after `delay` seconds. The first
    snoozes of a job use no attempt (its attempt is closed as `snoozed`); past the cap in
    queue.record_attempts each one counts, so a server that never lets a job through cannot
    keep it pending for ever."""


class FinalFailure(JobError):
    """A failure that retrying cannot fix (a guard, missing evidence, a refused request)."""

    retryable = False


class GuardFailed(FinalFailure):
    """The model's answer broke a guard; final, no retry."""


class InputChanged(JobError):
    """The job's input changed while it ran: nothing was written for the old input, and the
    job runs again at once without using up an attempt (its attempt ends `superseded`)."""


class SkipJob(JobError):
    """Nothing to do for this job (its subject is gone, no evidence): the job ends skipped."""

    retryable = False


class OwnershipLost(WorkerError):
    """The claiming transaction no longer owns a job it tried to finish; nothing was written."""
