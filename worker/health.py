"""Liveness and readiness, as /healthz and /readyz report them (worker/exposition.py).

Liveness: the asyncio loop ticks (a task stamps the time every second; the HTTP thread reads
how old the stamp is) and every slot and the listener still run. A database outage is not
a liveness failure: the worker reconnects by itself, and a restart would not help.

Readiness: the database answers, its schema has every migration this worker ships, and the
model endpoint answered once (checked at start-up, then every 30 s until it has).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import structlog

from worker.db import LazyConnection
from worker.migrate import pending

log = structlog.get_logger("worker.health")

TICK_S = 1.0
STALLED_AFTER_S = 10.0
MODEL_RECHECK_S = 30.0


class Health:
    def __init__(self, dsn: str, options: str = "") -> None:
        self._db = LazyConnection(dsn, "worker:health", options=options, connect_timeout=3)
        self._last_tick = time.monotonic()
        self.stalled_after = STALLED_AFTER_S
        self.running: Callable[[], bool] = lambda: True  # the worker's tasks all alive
        # None: not checked yet; "": answered; else why it did not
        self.model: str | None = None

    # -- what the loop does ---------------------------------------------------------------

    async def tick(self) -> None:
        """Stamp the time every TICK_S seconds; a stalled loop stops stamping."""
        while True:
            self._last_tick = time.monotonic()
            await asyncio.sleep(TICK_S)

    async def watch_model(self, check: Callable[[], Awaitable[str]]) -> None:
        """Ask the model endpoint until it has answered once; `check` returns "" when it
        answered, or why it did not."""
        while True:
            self.model = await check()
            if not self.model:
                return
            log.warning("model_endpoint_not_answering", reason=self.model,
                        retry_in=MODEL_RECHECK_S)
            await asyncio.sleep(MODEL_RECHECK_S)

    # -- what the HTTP thread asks --------------------------------------------------------

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        age = time.monotonic() - self._last_tick
        loop_ok = age < self.stalled_after
        tasks_ok = self.running()
        return loop_ok and tasks_ok, {"loop_tick_age_s": round(age, 3),
                                      "loop": "ticking" if loop_ok else "stalled",
                                      "tasks": "running" if tasks_ok else "a task ended"}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        database, migrations = self._database()
        model = ("not checked yet" if self.model is None
                 else "answered" if not self.model else self.model)
        ok = database == "ok" and migrations == "current" and model == "answered"
        return ok, {"database": database, "migrations": migrations, "model": model}

    def close(self) -> None:
        self._db.close()

    def _database(self) -> tuple[str, str]:
        try:
            missing = self._db.run(pending)
        except psycopg.Error as exc:
            return f"unreachable: {str(exc).strip().splitlines()[0][:200]}", "unknown"
        if missing:
            return "ok", f"behind by {len(missing)} (first: {missing[0].path.name})"
        return "ok", "current"
