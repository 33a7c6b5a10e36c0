"""The bookkeeping connection: attempt rows committed on their own, outside the claim.

An attempt must count even if the claiming transaction dies with its worker, so its row is
committed here before the handler starts.
"""

from __future__ import annotations

from typing import Any

from worker.pgsession import Session

# Reruns for changed input (InputChanged: attempts ending `superseded`) that do not use up an
# attempt; past them each one counts, so input that reads as changed on every run (a row an
# application rewrites in a loop) cannot rerun forever.
FREE_RERUNS = 3


class Bookkeeper:
    """The worker's own rows (attempts, its liveness) on a session of their own."""

    def __init__(self, dsn: str, application_name: str, options: str = "") -> None:
        self._session = Session(dsn, application_name, options=options,
                                setup="bookkeeping_setup")

    async def record(
        self, job_ids: list[int], claim_xid: str, worker_id: str
    ) -> list[dict[str, Any]]:
        """One attempt row per job that has attempts left; rows for all jobs are returned."""
        return await self._session.run(
            "record_attempts",
            {"job_ids": job_ids, "claim_xid": claim_xid, "worker_id": worker_id,
             "free_reruns": FREE_RERUNS},
        )

    async def register(self, worker_id: str, kinds: list[str]) -> None:
        await self._session.run(
            "worker_alive", {"worker_id": worker_id, "kinds": kinds, "started": True})

    async def heartbeat(self, worker_id: str, kinds: list[str],
                        unknown_kind_grace: float) -> tuple[int, int]:
        """Refresh this worker's row (recreated if it was removed) and its kinds' last-seen
        time; turn stray rerun requests into jobs; with a grace, fail jobs no live worker
        runs. Returns (reruns enqueued, jobs failed)."""
        await self._session.run(
            "worker_alive", {"worker_id": worker_id, "kinds": kinds, "started": False})
        reruns = await self._session.run("apply_stray_reruns", {})
        failed = 0
        if unknown_kind_grace > 0:
            rows = await self._session.run(
                "fail_unknown_kinds", {"grace_s": unknown_kind_grace})
            failed = int(rows[0]["failed"]) if rows else 0
        return int(reruns[0]["enqueued"]) if reruns else 0, failed

    async def deregister(self, worker_id: str) -> None:
        await self._session.run("worker_stopped", {"worker_id": worker_id})

    async def release(self, attempt_ids: list[int]) -> None:
        """Uncount attempts whose claim was rolled back on shutdown."""
        if attempt_ids:
            await self._session.run("release_attempts", {"attempt_ids": attempt_ids})

    async def close(self) -> None:
        await self._session.aclose()
