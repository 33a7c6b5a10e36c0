"""The job kinds this package ships, and how the worker assembles them at start-up.

Each kind is a small module supplying its handler to the shared pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import structlog

from worker.config import Settings
from worker.errors import ConfigError
from worker.kinds import embedding, explanation, weakness
from worker.models.build import check_embedding_dimension, vector_column_dimension
from worker.models.client import ModelClient
from worker.models.errors import ModelFinal, ModelRetryable
from worker.registry import JobKind, Registry

log = structlog.get_logger("worker.kinds")

# each built-in kind, by name, and the factory that makes it from the settings and the client
FACTORIES: dict[str, Callable[[Settings, ModelClient], JobKind]] = {
    embedding.KIND: embedding.kind,
    explanation.KIND: explanation.kind,
    weakness.KIND: weakness.kind,
}
BUILTIN = tuple(FACTORIES)


def enabled_kinds(selected: list[str] | None) -> list[str]:
    """WORKER_KINDS, checked; unset means every built-in kind."""
    if selected is None:
        return list(BUILTIN)
    unknown = sorted(set(selected) - set(BUILTIN))
    if unknown:
        raise ConfigError(f"WORKER_KINDS names unknown built-in kinds: {', '.join(unknown)} "
                          f"(known: {', '.join(BUILTIN)})")
    return selected


def register_builtin(target: Registry, kinds: list[str], settings: Settings,
                     client: ModelClient) -> None:
    for name in kinds:
        target.register(FACTORIES[name](settings, client))


def embedding_column_dimension(conn: psycopg.Connection[Any]) -> int | None:
    return vector_column_dimension(conn, "app.questions", "embedding")


async def probe_embedding_dimension(client: ModelClient, expected: int | None) -> None:
    """Start-up check: the model's vectors must fit the column. A model that cannot be reached
    is only a warning (the jobs will say why they fail); a wrong dimension stops start-up."""
    if expected is None:
        return
    try:
        await check_embedding_dimension(client, expected)
    except (ModelRetryable, ModelFinal) as exc:
        log.warning("embedding_probe_failed", error_code=exc.code, error=exc.message,
                    hint="the embedding dimension was not checked")
