"""The `mlx` backend: mlx-lm in process on Apple Silicon (the optional `mlx` extra).

MLX streams are thread-local, so the model is loaded and every generate call runs on one
persistent thread. A cancelled call waits until that thread's generate has returned.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from worker.errors import ConfigError
from worker.models import structured
from worker.models.gate import RoundTrip
from worker.models.types import CompletionRequest, RawReply, Usage

T = TypeVar("T")


class Runtime(Protocol):
    """What the backend needs from an inference library; both calls run on the MLX thread."""

    def load(self, model: str) -> Any: ...

    def generate(self, loaded: Any, messages: list[dict[str, str]],
                 request: CompletionRequest[Any], should_stop: Callable[[], bool]) -> RawReply:
        ...


class MlxLmRuntime:
    """mlx-lm itself, imported on first use so this module imports anywhere."""

    def load(self, model: str) -> Any:
        try:
            from mlx_lm import load  # type: ignore[import-not-found, unused-ignore]  # optional extra
        except ImportError as exc:
            raise ConfigError(
                "WORKER_LLM_BACKEND=mlx needs mlx-lm on Apple Silicon: "
                "pip install 'pg-llm-worker[mlx]'"
            ) from exc
        return (model, *load(model))

    def generate(self, loaded: Any, messages: list[dict[str, str]],
                 request: CompletionRequest[Any], should_stop: Callable[[], bool]) -> RawReply:
        # the optional extra: absent (and untyped) off Apple Silicon
        from mlx_lm import stream_generate  # type: ignore[import-not-found, unused-ignore]
        from mlx_lm.sample_utils import (  # type: ignore[import-not-found, unused-ignore]
            make_sampler,
        )

        name, model, tokenizer = loaded
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        parts: list[str] = []
        finish: str | None = None
        prompt_tokens = completion_tokens = 0
        for step in stream_generate(
            model, tokenizer, prompt, max_tokens=request.max_tokens,
            sampler=make_sampler(temp=request.temperature),
        ):
            parts.append(step.text)
            prompt_tokens, completion_tokens = step.prompt_tokens, step.generation_tokens
            finish = step.finish_reason
            if should_stop():
                # checked per token: a cancelled call frees the model within one step
                finish = "cancelled"
                break
        return RawReply(
            text="".join(parts),
            finish_reason=finish,
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
            model=name,
        )


async def _until_done(future: asyncio.Future[Any]) -> bool:
    """Wait for a thread's future however often we are cancelled; True if we were."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            cancelled = True
        except Exception:  # the caller reads the outcome from the future itself
            break
    return cancelled


class MlxThread:
    """One dedicated thread that runs every MLX call, in submission order."""

    def __init__(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="mlx"
        )

    async def run(self, fn: Callable[[threading.Event], T]) -> T:
        """Run fn(stop) on the thread. When the caller is cancelled (its asyncio.timeout
        included), stop is set and the cancellation propagates only once fn has really
        returned: until then the model is busy, and the gate must stay held."""
        stop = threading.Event()
        future = asyncio.wrap_future(self._executor.submit(fn, stop))
        try:
            # shielded: cancelling must not detach us from work still on the thread
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            stop.set()
            await _until_done(future)
            raise

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class MlxChat:
    """Chat through mlx-lm in process. MLX has no response_format: the schema always goes
    into the prompt, and the reply is repaired and validated like any other."""

    backend = "mlx"
    json_mode = "prompt"

    def __init__(self, model: str, runtime: Runtime | None = None) -> None:
        self.model = model
        self._runtime = runtime or MlxLmRuntime()
        self._thread = MlxThread()
        self._loaded: Any = None

    async def start(self) -> None:
        """Load the model on the MLX thread. Call it at start-up: a first call that has to
        load the model spends its timeout on loading."""
        if self._loaded is None:
            await self._thread.run(self._load)

    def _load(self, _stop: threading.Event) -> None:
        # runs on the MLX thread, so calls are serial; assigned here, not by the awaiting
        # coroutine, so a load outlasting a cancelled caller is still kept
        if self._loaded is None:
            self._loaded = self._runtime.load(self.model)

    async def chat(self, request: CompletionRequest[Any], trip: RoundTrip) -> RawReply:
        """One generate on the MLX thread, inside `trip` from start to end: the model is busy
        the whole time (loading it too, if start() was not called)."""
        sent = [
            {"role": m.role, "content": m.content}
            for m in structured.with_schema_prompt(list(request.messages), request.output)
        ]

        def generate(stop: threading.Event) -> RawReply:
            return self._runtime.generate(self._loaded, sent, request, stop.is_set)

        async with trip.hold():
            await self.start()
            return await self._thread.run(generate)

    async def aclose(self) -> None:
        # waits for a generate in progress: the model must not be freed under it
        await asyncio.get_running_loop().run_in_executor(None, self._thread.shutdown)
