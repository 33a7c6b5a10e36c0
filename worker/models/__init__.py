"""The model layer: one interface for structured completions and embeddings, whatever serves
them (the OpenAI API, an OpenAI-compatible server, mlx-lm in process), through shared gates.
"""

from __future__ import annotations

from worker.models.accounting import Accountant, CallRecord
from worker.models.build import build_client, check_embedding_dimension, vector_column_dimension
from worker.models.client import ChatBackend, EmbeddingBackend, ModelClient, check_reply
from worker.models.errors import ModelError, ModelFinal, ModelRetryable, error_details
from worker.models.gate import AdvisoryGate, Gate, Gates, Ticket
from worker.models.settings import ModelSettings
from worker.models.types import (
    CallContext,
    CompletionRequest,
    CompletionResult,
    EmbeddingResult,
    JsonMode,
    Message,
    RawReply,
    Usage,
)

__all__ = [
    "Accountant",
    "AdvisoryGate",
    "CallContext",
    "CallRecord",
    "ChatBackend",
    "CompletionRequest",
    "CompletionResult",
    "EmbeddingBackend",
    "EmbeddingResult",
    "Gate",
    "Gates",
    "JsonMode",
    "Message",
    "ModelClient",
    "ModelError",
    "ModelFinal",
    "ModelRetryable",
    "ModelSettings",
    "RawReply",
    "Ticket",
    "Usage",
    "build_client",
    "check_embedding_dimension",
    "check_reply",
    "error_details",
    "vector_column_dimension",
]
