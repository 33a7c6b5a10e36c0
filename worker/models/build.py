"""Building the model client from settings, and the start-up checks that go with it.

A mismatch an operator must fix (an embedding dimension, a missing extra) is a ConfigError.
"""

from __future__ import annotations

from typing import Any

import psycopg

from worker.errors import ConfigError
from worker.models.accounting import Accountant
from worker.models.client import ChatBackend, ModelClient
from worker.models.gate import Gates
from worker.models.mlx_backend import MlxChat
from worker.models.openai_backend import OpenAIChat, OpenAIEmbedder, make_client
from worker.models.ratelimit import RateLimit
from worker.models.settings import OPENAI_API_URL, ModelSettings
from worker.models.types import CallContext
from worker.queries import q

PROBE_TEXT = "embedding dimension probe"


def build_client(settings: ModelSettings, dsn: str | None = None) -> ModelClient:
    """The process's model client. With a dsn, calls are recorded in queue.model_calls and
    cross-process gates are possible."""
    _check_keys(settings)
    gates = Gates(dsn)
    chat_endpoint = settings.chat_endpoint()
    chat_gate = gates.get(
        settings.llm_gate_name or chat_endpoint,
        settings.llm_gate_capacity,
        cross_process=settings.llm_gate_cross_process,
    )
    chat: ChatBackend
    if settings.llm_backend == "mlx":
        if not settings.mlx_model:
            raise ConfigError("WORKER_LLM_BACKEND=mlx needs WORKER_MLX_MODEL (a path or repo id)")
        chat = MlxChat(settings.mlx_model)
    else:
        chat = OpenAIChat(
            make_client(settings.openai_base_url, settings.openai_api_key,
                        max_reply_bytes=settings.max_reply_bytes),
            settings.llm_model,
            settings.llm_json_mode,
            settings.llm_max_tokens_field,
        )
    embed_endpoint = settings.embed_endpoint()
    # one endpoint serving both chat and embeddings is one model server: one gate
    embed_gate = (
        chat_gate
        if embed_endpoint == chat_endpoint
        else gates.get(embed_endpoint, settings.embed_gate_capacity)
    )
    embedder = OpenAIEmbedder(
        make_client(embed_endpoint, settings.embed_api_key or settings.openai_api_key,
                    max_reply_bytes=settings.max_reply_bytes),
        settings.embed_model,
        settings.embed_dim if settings.embed_send_dimensions else None,
        settings.embed_input_type,
    )
    return ModelClient(
        chat=chat,
        chat_gate=chat_gate,
        embedder=embedder,
        embed_gate=embed_gate,
        accountant=Accountant(dsn) if dsn else None,
        timeout_for=settings.timeout_for,
        embed_batch_size=settings.embed_batch_size,
        daily_token_budget=settings.daily_token_budget,
        chat_limit=_limit(f"{chat_endpoint} {settings.llm_model}", settings.chat_rate_limit,
                          settings.chat_token_limit),
        embed_limit=_limit(f"{embed_endpoint} {settings.embed_model}",
                           settings.embed_rate_limit, settings.embed_token_limit),
        rate_limit_max_wait=settings.rate_limit_max_wait,
    )


def _limit(key: str, requests: str | None, tokens: str | None) -> RateLimit | None:
    try:
        return RateLimit.of(key, requests, tokens)
    except ValueError as exc:
        raise ConfigError(f"WORKER_*_RATE_LIMIT / WORKER_*_TOKEN_LIMIT: {exc}") from None


def _check_keys(settings: ModelSettings) -> None:
    """The OpenAI API refuses every call without a key: say so at start-up, not in a stream
    of failed jobs. Another endpoint (a local server) may need none."""
    chat_key = settings.openai_api_key
    if settings.llm_backend == "openai" and settings.chat_endpoint() == OPENAI_API_URL \
            and chat_key is None:
        raise ConfigError("the chat model is the OpenAI API (OPENAI_BASE_URL unset) but "
                          "OPENAI_API_KEY is not set; set it, or point OPENAI_BASE_URL at "
                          "another server")
    if settings.embed_endpoint() == OPENAI_API_URL \
            and (settings.embed_api_key or chat_key) is None:
        raise ConfigError("the embedding model is the OpenAI API (WORKER_EMBED_BASE_URL and "
                          "OPENAI_BASE_URL unset) but neither WORKER_EMBED_API_KEY nor "
                          "OPENAI_API_KEY is set")


async def check_embedding_dimension(client: ModelClient, expected: int) -> int:
    """Embed a probe text; raise ConfigError unless its vector has `expected` dimensions."""
    result = await client.embed([PROBE_TEXT], CallContext(kind="startup_probe"))
    if result.dimensions != expected:
        raise ConfigError(
            f"embedding model {result.model!r} returns {result.dimensions}-dimensional "
            f"vectors, but {expected} are expected (WORKER_EMBED_DIM or the database "
            "column); use a model with that dimension or migrate the vector columns"
        )
    return result.dimensions


def vector_column_dimension(
    conn: psycopg.Connection[Any], table: str, column: str
) -> int | None:
    """The declared dimension of a pgvector column, or None for an untyped `vector`."""
    row = conn.execute(q("vector_column_dimension"), {"table": table, "column": column}).fetchone()
    if row is None:
        raise ConfigError(f"column {table}.{column} does not exist")
    value = row["dimension"] if isinstance(row, dict) else row[0]
    return int(value) if value is not None else None
