"""Per-call model accounting into queue.model_calls, on a connection of its own.

Committed at once, so tokens spent by an attempt whose transaction rolls back still count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import psycopg
import structlog

from worker.models.ratelimit import RateLimit
from worker.models.types import CallContext, Usage
from worker.pgsession import Session

log = structlog.get_logger("worker.models.accounting")

# how one round trip ended (queue.model_calls.outcome): invalid = shown back to the model
CallOutcome = Literal["ok", "invalid", "error"]


@dataclass(frozen=True)
class CallRecord:
    """One model round trip, as queue.model_calls stores it."""

    job_id: int | None
    attempt_id: int | None
    kind: str
    call: Literal["chat", "embedding"]
    backend: str
    model: str
    gate: str | None
    prompt_version: int | None
    round: int
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float
    gate_wait_ms: float
    outcome: CallOutcome
    error_code: str | None

    @classmethod
    def of(
        cls,
        ctx: CallContext,
        *,
        call: Literal["chat", "embedding"],
        backend: str,
        model: str,
        gate: str | None,
        usage: Usage | None,
        latency_ms: float,
        gate_wait_ms: float,
        outcome: CallOutcome,
        error_code: str | None = None,
        round: int = 1,
    ) -> CallRecord:
        usage = usage or Usage()
        return cls(
            job_id=ctx.job_id, attempt_id=ctx.attempt_id, kind=ctx.kind, call=call,
            backend=backend, model=model, gate=gate, prompt_version=ctx.prompt_version,
            round=round, prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens, latency_ms=round_ms(latency_ms),
            gate_wait_ms=round_ms(gate_wait_ms), outcome=outcome, error_code=error_code,
        )


def round_ms(value: float) -> float:
    return round(max(value, 0.0), 3)


class Accountant:
    """Writes CallRecords. A failed write is logged, never raised: the model's answer is
    already paid for, and failing the job over its bookkeeping would waste it."""

    def __init__(self, dsn: str, application_name: str = "worker-accounting") -> None:
        self._session = Session(dsn, application_name)

    async def record(self, rec: CallRecord) -> int | None:
        """Insert one row; returns its id, or None when it could not be written."""
        try:
            rows = await self._session.run("record_model_call", asdict(rec))
        except Exception as exc:  # a row that cannot be written (a lost server, text it
            # refuses) is logged: bookkeeping never fails the call it records
            log.error("model_call_not_recorded", error=f"{type(exc).__name__}: {exc}",
                      kind=rec.kind, job_id=rec.job_id, outcome=rec.outcome)
            return None
        return int(rows[0]["id"]) if rows else None

    async def spent_today(self, kind: str) -> tuple[int, float]:
        """Tokens the kind's calls used today (UTC), and seconds until the day ends."""
        rows = await self._session.run("tokens_spent_today", {"kind": kind})
        return int(rows[0]["spent"]), float(rows[0]["resets_in"])

    async def take_rate(self, limit: RateLimit, tokens: int) -> float:
        """Seconds until a request of about `tokens` tokens fits `limit`; 0: it was counted
        and may go now (queue.rate_take, shared by the fleet)."""
        rows = await self._session.run("rate_take", {
            "key": limit.key, "requests": limit.requests, "tokens_max": limit.tokens,
            "window": limit.counted_window, "tokens": tokens})
        return float(rows[0]["wait"])

    async def block_rate(self, key: str, seconds: float) -> None:
        """The server answered 429: hold the whole fleet's requests to `key` back."""
        try:
            await self._session.run("rate_block", {"key": key, "seconds": seconds})
        except psycopg.Error as exc:  # best effort: each worker still snoozes its own job
            log.warning("rate_block_failed", key=key, error=f"{type(exc).__name__}: {exc}")

    async def aclose(self) -> None:
        await self._session.aclose()
