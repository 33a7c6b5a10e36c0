"""Configuration from the environment (and an optional `.env`), validated once at start-up.

Every variable is listed, with its default and meaning, in docs/operations.md.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from worker.paths import PROJECT_ROOT


def _default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Settings(BaseSettings):
    """Worker settings. Variables are prefixed `WORKER_` except DATABASE_URL."""

    model_config = SettingsConfigDict(
        env_prefix="WORKER_", env_file=".env", extra="ignore", frozen=True,
        populate_by_name=True,
    )

    database_url: SecretStr | None = Field(default=None, validation_alias="DATABASE_URL")
    embedded_pgdata: Path = PROJECT_ROOT / ".data" / "pg"

    worker_id: str = Field(default_factory=_default_worker_id)
    # built-in job kinds to run (comma-separated); unset runs them all, empty runs none
    kinds: Annotated[list[str] | None, NoDecode] = None
    # modules imported at start-up that register extra job kinds (comma-separated)
    plugins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # per-kind overrides, e.g. "embedding=4,explanation=2"
    concurrency: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)
    batch_size: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)

    poll_interval: float = Field(default=1.0, gt=0)
    shutdown_grace: float = Field(default=25.0, ge=0)
    retry_base: float = Field(default=2.0, ge=0)
    retry_cap: float = Field(default=300.0, ge=0)

    # a pending job of a kind that no live worker runs fails as `unknown_kind` after this
    # many seconds (0 = never); workers announce their kinds in queue.workers
    unknown_kind_grace: float = Field(default=600.0, ge=0)
    heartbeat_interval: float = Field(default=30.0, gt=0)

    statement_timeout_ms: int = Field(default=30_000, ge=0)
    # how long a claim's statement waits for a row lock the application holds (its domain
    # write-backs): past it only that job fails `db_conflict` and is retried; 0 = no limit
    lock_timeout_ms: int = Field(default=5_000, ge=0)
    # the backstop for a worker that hangs while its claiming transaction is open; it must
    # exceed the longest job timeout. Unset: 5 minutes, or the longest job timeout plus a
    # minute if that is longer (the offline models' long timeouts)
    idle_in_tx_timeout_ms: int | None = Field(default=None, ge=0)

    # 0 = no metrics endpoint; otherwise Prometheus metrics on 127.0.0.1:<port>
    metrics_port: int = Field(default=0, ge=0, le=65535)

    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "info"

    @field_validator("plugins", "kinds", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("concurrency", "batch_size", mode="before")
    @classmethod
    def _split_mapping(cls, value: object) -> object:
        if isinstance(value, str):
            pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
            if any(len(pair) != 2 for pair in pairs):
                raise ValueError("expected kind=number pairs separated by commas")
            return {kind.strip(): int(number) for kind, number in pairs}
        return value


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]  # pydantic-settings fills the rest
