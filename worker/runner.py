"""Assembling a worker for this process: settings → model client → job kinds → Worker.

Shared by `python -m worker run` and the demo; the model client is closed on the way out.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from worker import kinds
from worker.config import Settings
from worker.db import connect
from worker.loop import Worker
from worker.models.build import build_client
from worker.registry import Registry, load_plugins


@contextlib.asynccontextmanager
async def assembled_worker(settings: Settings, dsn: str,
                           registry: Registry | None = None) -> AsyncIterator[Worker]:
    """A Worker with the built-in kinds WORKER_KINDS selects and the plugins' kinds. The
    embedding model's dimension is checked against the database column first."""
    # each assembly has a registry of its own, so a process can build a worker twice
    registry = registry or Registry()
    load_plugins(settings.plugins, registry)
    enabled = kinds.enabled_kinds(settings.kinds)
    with connect(dsn) as conn:
        dimension = kinds.embedding_column_dimension(conn)
    client = build_client(settings.models, dsn) if enabled else None
    try:
        if client is not None:
            await client.start()
            if kinds.embedding.KIND in enabled:
                await kinds.probe_embedding_dimension(client, dimension)
            kinds.register_builtin(registry, enabled, settings, client)
        yield Worker(settings, dsn, registry,
                     model_answers=client.answers if client is not None else None)
    finally:
        if client is not None:
            await client.aclose()
