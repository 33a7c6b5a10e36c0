"""The bookkeeping connection: attempt rows committed on their own, outside the claim.

An attempt must count even if the claiming transaction dies with its worker, so its row is
committed here before the handler starts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from worker.job import Job
from worker.pgsession import Session

# Reruns for changed input (InputChanged: attempts ending `superseded`) that do not use up an
# attempt; past them each one counts, so input that reads as changed on every run (a row an
# application rewrites in a loop) cannot rerun forever. The count is queue.record_attempts'
# (sql/migrations/0020_*.sql); this copy words the failure message.
FREE_RERUNS = 3
# Likewise for snoozes (a model server's 429): free up to this many per job.
FREE_SNOOZES = 20


@dataclass(frozen=True, slots=True)
class GivenBack:
    """Attempts given back on a graceful shutdown, each with its claim's receipt."""

    attempt_ids: list[int] = field(default_factory=list)
    receipts: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, jobs: Iterable[Job]) -> GivenBack:
        started = [(job.attempt_id, job.receipt) for job in jobs if job.attempt_id is not None]
        return cls([attempt_id for attempt_id, _ in started],
                   [receipt for _, receipt in started])

    def params(self) -> dict[str, Any]:
        return {"attempt_ids": self.attempt_ids, "receipts": self.receipts}


class Bookkeeper:
    """The worker's own rows (attempts, its liveness) on a session of their own."""

    def __init__(self, dsn: str, application_name: str, options: str = "") -> None:
        self._session = Session(dsn, application_name, options=options,
                                setup="bookkeeping_setup")

    async def record(
        self, job_ids: list[int], receipts: list[str], claim_xid: str, worker_id: str
    ) -> list[dict[str, Any]]:
        """One attempt row per job that has attempts left; rows for all jobs are returned."""
        return await self._session.run(
            "record_attempts",
            {"job_ids": job_ids, "receipts": receipts, "claim_xid": claim_xid,
             "worker_id": worker_id},
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

    async def maintain(self, retention: dict[str, float]) -> dict[str, int]:
        """The fleet's chores if they are due and this worker wins the turn
        (queue.maintenance): what each did (rows deleted, embeddings retried); empty when
        it was not this worker's turn."""
        rows = await self._session.run("maintenance", retention)
        return {row["item"]: int(row["n"]) for row in rows}

    async def fire_schedules(self) -> list[str]:
        """The cron schedules' due slots enqueued, when this worker wins the turn
        (queue.fire_schedules): each as name:slot (the job's subject)."""
        rows = await self._session.run("fire_schedules", {})
        return [f"{row['name']}:{row['slot'].astimezone(UTC):%Y-%m-%dT%H:%MZ}" for row in rows]

    async def deregister(self, worker_id: str) -> None:
        await self._session.run("worker_stopped", {"worker_id": worker_id})

    async def release(self, given_back: GivenBack) -> None:
        """Uncount attempts whose claim is rolled back on shutdown."""
        if given_back.attempt_ids:
            await self._session.run("release_attempts", given_back.params())

    async def close(self) -> None:
        await self._session.aclose()
