"""Per-call model accounting into queue.model_calls, on a connection of its own.

Committed at once, so tokens spent by an attempt whose transaction rolls back still count.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import Any, Literal

import psycopg
import structlog

from worker.db import aconnect
from worker.models.types import CallContext, Usage
from worker.queries import q

log = structlog.get_logger("worker.models.accounting")

Outcome = Literal["ok", "invalid", "error"]


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
    outcome: Outcome
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
        outcome: Outcome,
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
        self._dsn = dsn
        self._application_name = application_name
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> psycopg.AsyncConnection[dict[str, Any]]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await aconnect(
                self._dsn, autocommit=True, application_name=self._application_name
            )
        return self._conn

    async def record(self, rec: CallRecord) -> int | None:
        """Insert one row; returns its id, or None when it could not be written."""
        async with self._lock:
            for attempt in (1, 2):
                try:
                    conn = await self._connection()
                    cur = await conn.execute(q("record_model_call"), asdict(rec))
                    row = await cur.fetchone()
                    return int(row["id"]) if row else None
                except psycopg.OperationalError as exc:
                    # one reconnect: the server may have restarted since the last call
                    if self._conn is not None:
                        await self._conn.close()
                    if attempt == 2:
                        log.error("model_call_not_recorded", error=str(exc), kind=rec.kind,
                                  job_id=rec.job_id, outcome=rec.outcome)
                except psycopg.Error as exc:
                    log.error("model_call_not_recorded", error=str(exc), kind=rec.kind,
                              job_id=rec.job_id, outcome=rec.outcome)
                    return None
        return None

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.close()
