"""The worker's settings: one root, read once from the environment (and an optional `.env`)
by `load_settings`, with a section per part (models, evidence, reranker, prompts).

Every variable is listed, with its default and meaning, in docs/operations.md and docs/models.md.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from worker.models.settings import ModelSettings, kind_pairs
from worker.paths import PROMPTS_DIR, state_dir

# the password of a connection URI as written (up to the last "@"), percent-escapes and all
_URL_PASSWORD = re.compile(r"//[^:/@\s]*:(\S+)@")

_SECTION = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class EvidenceSettings(BaseModel):
    """How much evidence goes into an explanation prompt (WORKER_EVIDENCE_*). A small CPU
    model may want less than the defaults: every piece adds prompt tokens to read before the
    first answer token."""

    model_config = _SECTION

    material_top: int = Field(default=5, ge=0)
    questions_top: int = Field(default=3, ge=0)
    candidates: int = Field(default=20, ge=1)
    # one piece of evidence is cut to this many characters, so the prompt stays bounded
    item_chars: int = Field(default=700, ge=50)


class RerankSettings(BaseModel):
    """The evidence reranker (WORKER_RERANK_*); no base URL means vector order."""

    model_config = _SECTION

    base_url: str | None = None
    model: str = "bge-reranker-v2-m3"
    api_key: SecretStr | None = None
    timeout: float = 15.0


class PromptSettings(BaseModel):
    """Which prompt file each kind uses: PROMPT_VERSION_<KIND>, else PROMPT_VERSION, else the
    latest; `latest` or a version number."""

    model_config = _SECTION

    version: str = "latest"
    per_kind: dict[str, str] = Field(default_factory=dict)
    directory: Path = Field(default=PROMPTS_DIR, validation_alias="WORKER_PROMPTS_DIR")

    def version_for(self, kind: str) -> str:
        # an empty variable counts as unset
        return self.per_kind.get(kind) or self.version or "latest"


@dataclass(frozen=True)
class Variables:
    """Where a section's fields come from: the variable `prefix` + the field's name, or the
    names its validation_alias lists; a field in `collect` gathers every variable that starts
    with the prefix given there, keyed by the rest of the name."""

    prefix: str
    collect: tuple[tuple[str, str], ...] = ()

    def read(self, section: type[BaseModel], environ: Mapping[str, str | None]
             ) -> dict[str, object]:
        values: dict[str, object] = {}
        collected = dict(self.collect)
        for name, field in section.model_fields.items():
            value = (_starting_with(collected[name], environ) if name in collected
                     else _first(self._names(name, field), environ))
            if value is not None:
                values[name] = value
        return values

    def _names(self, name: str, field: FieldInfo) -> list[str]:
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            return [choice for choice in alias.choices if isinstance(choice, str)]
        if isinstance(alias, str):
            return [alias]
        return [self.prefix + name]


def _first(names: list[str], environ: Mapping[str, str | None]) -> str | None:
    found = (environ.get(name.lower()) for name in names)
    return next((value for value in found if value is not None), None)


def _starting_with(prefix: str, environ: Mapping[str, str | None]) -> dict[str, str] | None:
    start = prefix.lower()
    found = {name[len(start):]: value for name, value in environ.items()
             if name.startswith(start) and value is not None}
    return found or None


class _Sections(PydanticBaseSettingsSource):
    """Every section's variables, from the environment first and the `.env` file second."""

    def __init__(self, settings_cls: type[BaseSettings],
                 environ: Mapping[str, str | None]) -> None:
        super().__init__(settings_cls)
        self.environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # required by the base class; __call__ reads whole sections instead
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            for variables in field.metadata:
                if isinstance(variables, Variables) and isinstance(field.annotation, type):
                    found[name] = variables.read(field.annotation, self.environ)
        return found


def _default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Settings(BaseSettings):
    """Worker settings. Variables are prefixed `WORKER_` except DATABASE_URL; the sections
    read the variables their `Variables` name."""

    model_config = SettingsConfigDict(
        env_prefix="WORKER_", env_file=".env", extra="ignore", frozen=True,
        populate_by_name=True,
    )

    database_url: SecretStr | None = Field(default=None, validation_alias="DATABASE_URL")
    # a checkout's .data/pg; an installed wheel's $STATE_DIRECTORY/pg or user state directory
    embedded_pgdata: Path = Field(default_factory=lambda: state_dir() / "pg")

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
    # many seconds (0 = never, else at least 60: queue.fail_unknown_kinds refuses less);
    # workers announce their kinds in queue.workers
    unknown_kind_grace: float = Field(default=600.0, ge=0)
    heartbeat_interval: float = Field(default=30.0, gt=0)

    # retention: finished jobs (with their attempts) and model calls older than these ages
    # are deleted, in batches, except the latest job of each subject; model calls are added
    # to the daily rollup first. One worker of the fleet does it, at most once per
    # maintenance_interval seconds (0: never; `python -m worker prune` still can)
    maintenance_interval: float = Field(default=3600.0, ge=0)
    retain_completed_days: float = Field(default=7.0, ge=1 / 24)
    retain_failed_days: float = Field(default=30.0, ge=1 / 24)
    retain_model_calls_days: float = Field(default=90.0, ge=1 / 24)
    retention_batch: int = Field(default=10_000, ge=1, le=100_000)
    # failed embeddings set pending again and re-enqueued per maintenance run, at most
    embedding_retry_cap: int = Field(default=100, ge=0, le=10_000)

    statement_timeout_ms: int = Field(default=30_000, ge=0)
    # how long a claim's statement waits for a row lock the application holds (its domain
    # write-backs): past it only that job fails `db_conflict` and is retried; 0 = no limit
    lock_timeout_ms: int = Field(default=5_000, ge=0)
    # the backstop for a worker that hangs while its claiming transaction is open; it must
    # exceed the longest job timeout. Unset: 5 minutes, or the longest job timeout plus a
    # minute if that is longer (the offline models' long timeouts)
    idle_in_tx_timeout_ms: int | None = Field(default=None, ge=0)

    # 0 = no HTTP endpoint; otherwise Prometheus metrics, /healthz and /readyz on
    # <metrics_addr>:<port> (worker/exposition.py); an IP address, loopback by default
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_addr: str = "127.0.0.1"

    # the operator's dashboard (`python -m worker dashboard`, docs/dashboard.md): where it
    # listens, the token its buttons need (unset: no buttons), read-only mode, the role its
    # connections act as (empty: the login's own), and the rows on one page of a list
    dashboard_addr: str = "127.0.0.1"
    dashboard_port: int = Field(default=8465, ge=1, le=65535)
    dashboard_token: SecretStr | None = None
    dashboard_read_only: bool = False
    dashboard_role: str = "llm_dashboard"
    dashboard_page_size: int = Field(default=50, ge=1, le=500)

    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"

    # explanations: also have the model solve each question blind (without the key) and
    # record whether it agrees (`record`), or refuse to publish when it does not (`block`)
    explanation_verify: Literal["off", "record", "block"] = "off"

    # `run --offline` and the demo: which local chat model, and where its file is assembled
    offline_model: str = "qwen2.5-coder-0.5b"
    models_dir: Path = Field(default_factory=lambda: state_dir() / "models")
    # how the offline chat model runs: `auto` is MLX in process on Apple Silicon and the
    # llama.cpp server elsewhere (worker/offline/stack.py says why)
    offline_llm: Literal["auto", "llama.cpp", "mlx"] = "auto"
    # the offline GGUF converted for MLX, one directory per GGUF hash and conversion options
    mlx_cache_dir: Path = Path.home() / ".cache" / "pg-llm-worker" / "mlx"

    models: Annotated[ModelSettings, Variables("WORKER_")] = Field(
        default_factory=ModelSettings)
    evidence: Annotated[EvidenceSettings, Variables("WORKER_EVIDENCE_")] = Field(
        default_factory=EvidenceSettings)
    rerank: Annotated[RerankSettings, Variables("WORKER_RERANK_")] = Field(
        default_factory=RerankSettings)
    prompts: Annotated[PromptSettings, Variables(
        "PROMPT_", collect=(("per_kind", "PROMPT_VERSION_"),))] = Field(
        default_factory=PromptSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        environ: dict[str, str | None] = {}
        for source in (dotenv_settings, env_settings):  # the environment wins over .env
            if isinstance(source, EnvSettingsSource):
                environ.update(source.env_vars)
        # after the overrides, so that a section given as a dict is merged field by field
        # over what the environment says
        return (init_settings, env_settings, dotenv_settings,
                _Sections(settings_cls, environ), file_secret_settings)

    @field_validator("database_url")
    @classmethod
    def _parsable_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        if not value.get_secret_value().strip():
            # libpq would take "" as "every default": a local socket nobody configured
            raise ValueError("set but empty; unset it to use the embedded server, or give "
                             "postgresql://user:password@host:port/database")
        try:
            parts = conninfo_to_dict(value.get_secret_value())
        except psycopg.ProgrammingError:
            # psycopg's reason quotes the URL or part of it, password included
            raise ValueError("cannot be parsed: expected "
                             "postgresql://user:password@host:port/database (percent-escape "
                             "special characters) or key=value pairs") from None
        ports = str(parts.get("port") or "").split(",")
        if not all(port.strip().isdigit() or not port.strip() for port in ports):
            raise ValueError("the port is not a number: expected "
                             "postgresql://user:password@host:port/database")
        return value

    def retention(self) -> dict[str, float]:
        """The retention settings as the maintenance and prune queries take them."""
        day = 86_400.0
        return {"every_s": self.maintenance_interval,
                "completed_s": self.retain_completed_days * day,
                "failed_s": self.retain_failed_days * day,
                "calls_s": self.retain_model_calls_days * day,
                "batch": self.retention_batch, "retry_cap": self.embedding_retry_cap}

    @field_validator("dashboard_token")
    @classmethod
    def _no_guessable_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None  # empty: no token, the dashboard shows no buttons
        if len(value.get_secret_value()) < 16:
            raise ValueError("at least 16 characters (e.g. `openssl rand -hex 16`), or unset "
                             "it for a dashboard without actions")
        return value

    @field_validator("unknown_kind_grace")
    @classmethod
    def _grace_off_or_a_minute(cls, value: float) -> float:
        if 0 < value < 60:
            raise ValueError("0 (never) or at least 60 seconds")
        return value

    @field_validator("metrics_addr")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value.strip().strip("[]")))
        except ValueError:
            raise ValueError("an IP address to listen on, e.g. 127.0.0.1 (the default), "
                             "::1, or 0.0.0.0 for every interface") from None

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

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
            return kind_pairs(value, "number")
        return value

    @field_validator("concurrency", "batch_size")
    @classmethod
    def _at_least_one(cls, value: dict[str, int]) -> dict[str, int]:
        if any(number < 1 for number in value.values()):
            raise ValueError("each number must be at least 1 (expected kind=number pairs, "
                             "e.g. embedding=4,explanation=2)")
        return value


def variable_for(location: tuple[int | str, ...]) -> str:
    """The environment variable behind a validation error's location, e.g. ("models",
    "llm_gate_capacity") -> WORKER_LLM_GATE_CAPACITY, ("concurrency", "embedding") ->
    WORKER_CONCURRENCY."""
    field = Settings.model_fields.get(str(location[0])) if location else None
    if field is None:
        return ".".join(str(part) for part in location)
    variables = next((m for m in field.metadata if isinstance(m, Variables)), None)
    if variables is None or len(location) < 2 or not isinstance(field.annotation, type):
        return _variable_names(str(location[0]), field, "WORKER_")[0]
    name = str(location[1])
    collected = dict(variables.collect)
    if name in collected:
        return collected[name] + (str(location[2]).upper() if len(location) > 2 else "<KIND>")
    section_field = field.annotation.model_fields.get(name)
    if section_field is None:
        return variables.prefix + name.upper()
    return _variable_names(name, section_field, variables.prefix)[0]


def _variable_names(name: str, field: FieldInfo, prefix: str) -> list[str]:
    return [n.upper() for n in Variables(prefix)._names(name, field)]


def secret_values(settings: Settings) -> list[str]:
    """Every secret the settings hold, as it may appear in text: the API keys, the database
    URL and its password both as written and percent-decoded."""
    keys = (settings.models.openai_api_key, settings.models.embed_api_key,
            settings.rerank.api_key, settings.database_url, settings.dashboard_token)
    values = [key.get_secret_value() for key in keys if key is not None]
    if settings.database_url is not None:
        url = settings.database_url.get_secret_value()
        # decoded by psycopg (a URI or key=value pairs; the validator parsed it already),
        # and a URI's password as written
        values += [str(conninfo_to_dict(url).get("password") or ""), *_URL_PASSWORD.findall(url)]
    return values


def load_settings(**overrides: object) -> Settings:
    """The settings: `overrides` (by field name; a section as a dict of its fields, merged
    over the environment's) win over the environment, which wins over `.env`."""
    return Settings(**overrides)  # type: ignore[arg-type]  # pydantic-settings fills the rest
