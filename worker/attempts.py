"""The bookkeeping connection: attempt rows committed on their own, outside the claim.

An attempt must count even if the claiming transaction dies with its worker, so its row is
committed here before the handler starts.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import structlog

from worker.db import aconnect
from worker.queries import q

log = structlog.get_logger("worker.attempts")


class Bookkeeper:
    def __init__(self, dsn: str, application_name: str, options: str = "") -> None:
        self._dsn = dsn
        self._application_name = application_name
        self._options = options
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> psycopg.AsyncConnection[dict[str, Any]]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await aconnect(
                self._dsn, autocommit=True, application_name=self._application_name,
                options=self._options,
            )
            await self._conn.execute(q("bookkeeping_setup"))
        return self._conn

    async def _run(self, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        async with self._lock:
            for attempt in (1, 2):
                conn = await self._connection()
                try:
                    cur = await conn.execute(q(name), params)
                    return await cur.fetchall() if cur.description else []
                except psycopg.OperationalError:
                    # one reconnect: the server may have restarted since the last use
                    await conn.close()
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    async def record(
        self, job_ids: list[int], claim_xid: str, worker_id: str
    ) -> list[dict[str, Any]]:
        """One attempt row per job that has attempts left; rows for all jobs are returned."""
        return await self._run(
            "record_attempts",
            {"job_ids": job_ids, "claim_xid": claim_xid, "worker_id": worker_id},
        )

    async def register(self, worker_id: str, kinds: list[str]) -> None:
        await self._run("worker_alive", {"worker_id": worker_id, "kinds": kinds,
                                         "started": True})

    async def heartbeat(self, worker_id: str, kinds: list[str],
                        unknown_kind_grace: float) -> tuple[int, int]:
        """Refresh this worker's row (recreated if it was removed) and its kinds' last-seen
        time; turn stray rerun requests into jobs; with a grace, fail jobs no live worker
        runs. Returns (reruns enqueued, jobs failed)."""
        await self._run("worker_alive", {"worker_id": worker_id, "kinds": kinds,
                                         "started": False})
        reruns = await self._run("apply_stray_reruns", {})
        failed = 0
        if unknown_kind_grace > 0:
            rows = await self._run("fail_unknown_kinds", {"grace_s": unknown_kind_grace})
            failed = int(rows[0]["failed"]) if rows else 0
        return int(reruns[0]["enqueued"]) if reruns else 0, failed

    async def deregister(self, worker_id: str) -> None:
        await self._run("worker_stopped", {"worker_id": worker_id})

    async def release(self, attempt_ids: list[int]) -> None:
        """Uncount attempts whose claim was rolled back on shutdown."""
        if attempt_ids:
            await self._run("release_attempts", {"attempt_ids": attempt_ids})

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
