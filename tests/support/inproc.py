"""An in-process worker for integration tests, with its own registry of handlers."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from worker.config import Settings
from worker.executor import EventHook
from worker.loop import Worker
from worker.registry import Registry


@contextlib.asynccontextmanager
async def running_worker(dsn: str, registry: Registry, *, on_event: EventHook | None = None,
                         **overrides: Any) -> AsyncIterator[Worker]:
    values: dict[str, Any] = {
        "database_url": dsn, "worker_id": f"test-{uuid.uuid4().hex[:6]}", "poll_interval": 0.3,
        "shutdown_grace": 5.0, "retry_base": 0.05, "retry_cap": 0.2,
    }
    values.update(overrides)
    worker = Worker(Settings(**values), dsn, registry, on_event=on_event)
    task = asyncio.create_task(worker.run())
    ready = asyncio.create_task(worker.ready.wait())
    await asyncio.wait([task, ready], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()
    assert worker.ready.is_set(), "worker did not become ready"
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)


async def until(predicate: Any, within: float = 20, interval: float = 0.05,
                message: str = "condition") -> Any:
    """Await an async predicate until truthy; fail after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        await asyncio.sleep(interval)
