"""The helpers' reconnecting session: a lost connection is replaced once, a failed statement on
a healthy one is the caller's, and the connection is named for pg_stat_activity."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from tests.support.inproc import until
from worker.pgsession import Session

NAME = "test-session"


def _backends(conn: psycopg.Connection[dict[str, Any]]) -> list[int]:
    rows = conn.execute(
        b"SELECT pid FROM pg_stat_activity WHERE application_name = %s", (NAME,)).fetchall()
    return [row["pid"] for row in rows]


def test_a_lost_connection_is_replaced_once(
    dsn: str, conn: psycopg.Connection[dict[str, Any]]
) -> None:
    async def main() -> None:
        session = Session(dsn, NAME)
        try:
            await session.run("stats")
            (first,) = _backends(conn)
            conn.execute(b"SELECT pg_terminate_backend(%s)", (first,))
            assert await session.run("stats") == []  # on a new connection, no error
            (second,) = _backends(conn)
            assert second != first
        finally:
            await session.aclose()

        async def closed() -> bool:
            # a backend leaves pg_stat_activity a moment after its client hangs up
            return _backends(conn) == []
        await until(closed, message="the session's backend to exit")

    asyncio.run(main())


def test_a_failed_statement_on_a_healthy_connection_is_not_retried(
    dsn: str, conn: psycopg.Connection[dict[str, Any]]
) -> None:
    job = conn.execute(b"SELECT queue.enqueue('explanation', 'q:1') AS id").fetchone()
    assert job is not None
    params = {"job_id": job["id"], "attempt_id": None, "kind": "explanation", "call": "chat",
              "backend": "openai", "model": "m", "gate": None, "prompt_version": None,
              "round": 1, "prompt_tokens": None, "completion_tokens": None,
              "latency_ms": 1.0, "gate_wait_ms": 0.0, "outcome": "ok", "error_code": None}

    async def main() -> None:
        session = Session(dsn, NAME, options="-c lock_timeout=50")
        try:
            await session.run("stats")
            (before,) = _backends(conn)
            # the row lock makes the insert's foreign key check wait, then time out
            with conn.transaction():
                conn.execute(b"SELECT 1 FROM queue.jobs WHERE id = %s FOR UPDATE", (job["id"],))
                with pytest.raises(psycopg.errors.LockNotAvailable):
                    await session.run("record_model_call", params)
            assert _backends(conn) == [before]  # kept, not replaced
            assert len(await session.run("record_model_call", params)) == 1
        finally:
            await session.aclose()

    asyncio.run(main())
