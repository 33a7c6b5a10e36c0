"""The LISTEN connection: turns NOTIFY on `queue_jobs` into wake-ups, and survives reconnects.

After every (re)connect it wakes every kind, since notifications sent while it was away are lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import structlog

from worker.db import aconnect
from worker.queries import q

log = structlog.get_logger("worker.listener")

CHANNEL = "queue_jobs"
# how often an idle LISTEN connection is probed, so a silently dead one is noticed
PROBE_INTERVAL = 15.0


class Listener:
    def __init__(
        self,
        dsn: str,
        wake: Callable[[str | None], None],
        application_name: str,
        connect_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self._dsn = dsn
        self._wake = wake
        self._application_name = application_name
        self._connect_kwargs = connect_kwargs or {}
        self.listening = asyncio.Event()
        self.backend_pid: int | None = None

    async def run(self) -> None:
        delay = 0.1
        while True:
            try:
                conn = await aconnect(
                    self._dsn, autocommit=True, application_name=self._application_name,
                    **self._connect_kwargs,
                )
            except psycopg.OperationalError as exc:
                log.warning("listen_connect_failed", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            try:
                async with conn:
                    await conn.execute(q("listen"))
                    self.backend_pid = conn.info.backend_pid
                    self.listening.set()
                    delay = 0.1
                    log.info("listening", channel=CHANNEL, backend_pid=self.backend_pid)
                    self._wake(None)
                    await self._consume(conn)
            except psycopg.OperationalError as exc:
                self.listening.clear()
                log.warning("listen_connection_lost", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _consume(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            async for notify in conn.notifies(timeout=PROBE_INTERVAL):
                self._wake(notify.payload or None)
            await conn.execute(q("ping"))
