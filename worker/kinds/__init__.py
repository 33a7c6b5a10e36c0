"""The job kinds this package ships, and how the worker assembles them at start-up.

Each kind is a small module supplying its handler to the shared pipeline.
"""

from __future__ import annotations

from typing import Any

import psycopg
import structlog

from worker.errors import ConfigError
from worker.kinds import embedding, explanation, weakness
from worker.models.build import check_embedding_dimension, vector_column_dimension
from worker.models.client import ModelClient
from worker.models.errors import ModelFinal, ModelRetryable
from worker.models.settings import ModelSettings
from worker.registry import Registry

log = structlog.get_logger("worker.kinds")

BUILTIN = (embedding.KIND, explanation.KIND, weakness.KIND)


def enabled_kinds(selected: list[str] | None) -> list[str]:
    """WORKER_KINDS, checked; unset means every built-in kind."""
    if selected is None:
        return list(BUILTIN)
    unknown = sorted(set(selected) - set(BUILTIN))
    if unknown:
        raise ConfigError(f"WORKER_KINDS names unknown built-in kinds: {', '.join(unknown)} "
                          f"(known: {', '.join(BUILTIN)})")
    return selected


def register_builtin(
    target: Registry, kinds: list[str], client: ModelClient, settings: ModelSettings
) -> None:
    if embedding.KIND in kinds:
        # the job's limit covers reading the batch, the model round trips and the writes
        model_timeout = settings.timeout_for(embedding.KIND)
        target.register(embedding.kind(client, settings.embed_batch_size,
                                       2 * model_timeout + 10, settings.embed_input_type))
    if explanation.KIND in kinds:
        target.register(explanation.kind(client, settings))
    if weakness.KIND in kinds:
        target.register(weakness.kind(client, settings))


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
