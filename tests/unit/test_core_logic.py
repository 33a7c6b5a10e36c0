"""Pure logic of the queue core: retry classification, backoff, queries, settings, masking."""

from __future__ import annotations

import asyncio
import io
import random
from datetime import UTC, datetime

import pytest

from worker import logs
from worker.config import Settings
from worker.errors import ConfigError, FinalFailure, GuardFailed, JobError, RetryLater, SkipJob
from worker.job import Job
from worker.models.errors import ModelDeferred, ModelSnoozed
from worker.queries import parse, q
from worker.registry import JobKind, Registry
from worker.retry import MAX_MESSAGE, backoff, classify
from worker.wakeup import SlotWaker


def _job(attempt: int = 1, max_attempts: int = 3) -> Job:
    return Job(id=1, kind="k", subject=None, payload={}, priority=0, max_attempts=max_attempts,
               created_at=datetime.now(UTC), attempt=attempt, attempt_id=10)


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (SkipJob("evidence_missing", "no evidence"), "skipped", "evidence_missing"),
        (GuardFailed("guard_fail", "3 != 2"), "failed", "guard_fail"),
        (FinalFailure("quota_exhausted", "no quota"), "failed", "quota_exhausted"),
        (RetryLater("rate_limited", "429"), "pending", "rate_limited"),
        (JobError("parse_fail", "bad json"), "pending", "parse_fail"),
        (TimeoutError(), "pending", "timeout"),
        (ValueError("boom"), "pending", "unknown_error"),
    ],
)
def test_classify_first_attempt(exc: BaseException, status: str, code: str) -> None:
    outcome = classify(exc, _job(attempt=1), base=2, cap=60)
    assert (outcome.status, outcome.error_code) == (status, code)
    if status == "pending":
        assert outcome.attempt_outcome == "retry" and 1 <= outcome.retry_in <= 2


def test_retryable_failures_on_the_last_attempt_are_final() -> None:
    outcome = classify(RetryLater("rate_limited", "429"), _job(3, 3), base=2, cap=60)
    assert (outcome.status, outcome.attempt_outcome) == ("failed", "failed")


def test_retry_after_hint_is_used_as_is() -> None:
    outcome = classify(RetryLater("rate_limited", "429", delay=42.0), _job(1), base=2, cap=60)
    assert outcome.retry_in == 42.0


def test_unknown_errors_keep_their_type_and_a_bounded_message() -> None:
    outcome = classify(ValueError("x" * 5000), _job(3, 3), base=2, cap=60)
    assert outcome.error_message is not None
    assert outcome.error_message.startswith("ValueError: xxx")
    assert len(outcome.error_message) == MAX_MESSAGE


def test_backoff_grows_exponentially_within_jitter_and_cap() -> None:
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = min(100.0, 1.0 * 2 ** (attempt - 1))
        delays = [backoff(attempt, 1.0, 100.0, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered


def test_named_queries_parse_and_reject_duplicates() -> None:
    parsed = parse("-- name: a\nSELECT 1;\n\n-- name: b\n-- a comment\nSELECT %(x)s;\n")
    assert parsed == {"a": b"SELECT 1;", "b": b"-- a comment\nSELECT %(x)s;"}
    with pytest.raises(ValueError, match="defined twice"):
        parse("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;")
    assert b"queue.claim(" in q("claim_jobs")
    with pytest.raises(KeyError, match="no query named"):
        q("nope")


def test_settings_parse_lists_and_per_kind_maps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_PLUGINS", "a.b, c.d")
    monkeypatch.setenv("WORKER_CONCURRENCY", "embedding=4,explanation=2")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw@h/db")
    settings = Settings()
    assert settings.plugins == ["a.b", "c.d"]
    assert settings.concurrency == {"embedding": 4, "explanation": 2}
    assert settings.database_url is not None and "pw" not in repr(settings)


def test_registry_applies_overrides_and_rejects_unknown_kinds() -> None:
    async def handler(conn: object, job: object) -> None:
        return None

    registry = Registry()
    registry.register(JobKind("a", handler))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="twice"):
        registry.register(JobKind("a", handler))  # type: ignore[arg-type]
    [kind] = registry.configured({"a": 3}, {"a": 50})
    assert (kind.concurrency, kind.batch_size) == (3, 50)
    with pytest.raises(ConfigError, match="unknown job kinds: zz"):
        registry.configured({"zz": 1}, {})


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("postgresql://worker:hunter2@db/app", "hunter2"),
        ("host=db password=hunter2 dbname=app", "hunter2"),
        ("key sk-proj-abcdefghijklmnop used", "abcdefghijklmnop"),
        ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
        ("HOST=db PASSWORD='hunter 2'", "hunter 2"),
        ("authorization: BEARER abc.def.ghi", "abc.def.ghi"),
    ],
)
def test_log_masking_hides_credentials(text: str, secret: str) -> None:
    assert secret not in logs.mask(text)
    assert logs.mask("job 12 of kind embedding completed") == "job 12 of kind embedding completed"


class _Stream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_log_lines_of_one_loop_step_are_written_together_and_in_order() -> None:
    stream = _Stream()
    writer = logs.LineWriter(stream)

    async def main() -> None:
        for i in range(50):  # one step of the loop: nothing awaited in between
            writer.msg(f"line {i}")
        assert stream.getvalue() == ""  # not yet: written right after this step
        await asyncio.sleep(0)
        assert stream.writes == 1
        writer.msg("next step")
        await asyncio.sleep(0)

    asyncio.run(main())
    assert stream.getvalue().splitlines() == [f"line {i}" for i in range(50)] + ["next step"]
    assert stream.writes == 2
    writer.msg("outside a loop")  # the CLI: written at once
    assert stream.getvalue().endswith("outside a loop\n") and stream.writes == 3


@pytest.mark.parametrize("encoding", ["utf-8", "ascii"])
def test_a_record_the_stream_cannot_encode_loses_no_line(encoding: str) -> None:
    """A lone surrogate (a model name from a lying server) or a character the stream's
    encoding lacks: that line is written with the character escaped, and its batch-mates
    are written as they are."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding=encoding, write_through=True)
    writer = logs.LineWriter(stream)

    async def main() -> None:
        writer.msg("before")
        writer.msg("model \ud800 \u00e9 \uc548")
        writer.msg("after")
        await asyncio.sleep(0)

    asyncio.run(main())
    lines = raw.getvalue().decode(encoding).splitlines()
    assert lines[0] == "before" and lines[2] == "after", lines
    assert lines[1].startswith("model \\ud800"), lines


def test_changed_input_reruns_at_once_even_on_the_last_attempt() -> None:
    from worker.errors import InputChanged

    outcome = classify(InputChanged("input_changed", "text edited"), _job(3, 3), base=2, cap=60)
    assert (outcome.status, outcome.attempt_outcome, outcome.retry_in) == (
        "pending", "superseded", 0.0)


def test_a_wake_up_reaches_one_idle_slot_and_is_owed_when_none_is_idle() -> None:
    async def main() -> None:
        waker = SlotWaker(poll_interval=5)
        slots = [asyncio.create_task(waker.wait()) for _ in range(3)]
        await asyncio.sleep(0)  # all three idle
        waker.wake_one()
        await asyncio.sleep(0)
        assert [t.done() for t in slots] == [True, False, False]  # the longest idle one
        waker.wake_all()
        await asyncio.sleep(0)
        assert all(t.done() for t in slots)
        # no idle slot: the wake-up is owed, and the next wait returns at once
        waker.wake_one()
        await asyncio.wait_for(waker.wait(), 0.1)
        # unless a claim started after it: that claim sees what the notification announced
        waker.wake_one()
        waker.claiming()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(waker.wait(), 0.05)
        # a wait that ended without a wake-up leaves nothing behind for the next one to hit
        later = asyncio.create_task(waker.wait())
        await asyncio.sleep(0)
        waker.wake_one()
        await asyncio.wait_for(later, 0.1)

    asyncio.run(main())


def test_a_timed_wake_up_keeps_the_earliest_and_leaves_far_ones_to_the_poll() -> None:
    async def main() -> None:
        waker = SlotWaker(poll_interval=60)
        first = asyncio.create_task(waker.wait())
        second = asyncio.create_task(waker.wait())
        await asyncio.sleep(0)
        waker.wake_in(120)  # past the poll: the poll will find it
        waker.wake_in(30)
        waker.wake_in(0.01)  # replaces the one in 30 s
        waker.wake_in(20)  # a later one does not push the earliest back
        await asyncio.wait_for(first, 5)
        await asyncio.sleep(0.05)
        assert not second.done()  # one wake-up, one slot
        # a timer that has fired does not hold back the next one
        waker.wake_in(0.01)
        await asyncio.wait_for(second, 5)

    asyncio.run(main())


def test_a_budget_deferral_uses_no_attempt_even_on_the_last_one() -> None:
    """A kind over its operator-set budget is not failing: the job waits for the window and
    keeps its attempts (the deferral is recorded as `deferred`, which no count includes)."""
    exc = ModelDeferred("budget_exceeded", "over today's budget", 3600.0)
    outcome = classify(exc, _job(3, 3), base=2, cap=60)
    assert (outcome.status, outcome.attempt_outcome, outcome.error_code) == (
        "pending", "deferred", "budget_exceeded")
    assert outcome.retry_in == 3600.0


def test_a_429_snooze_uses_no_attempt_even_on_the_last_one() -> None:
    """A server asking us to wait is not a failure of the job: rescheduled at its
    retry-after, the attempt closed as `snoozed` (free up to queue.record_attempts' cap)."""
    exc = ModelSnoozed("rate_limited", "429: slow down", 7.0)
    outcome = classify(exc, _job(2, 2), base=2, cap=60)
    assert (outcome.status, outcome.attempt_outcome, outcome.error_code) == (
        "pending", "snoozed", "rate_limited")
    assert outcome.retry_in == 7.0
