"""The `mlx` backend: mlx-lm in process (the optional `mlx` extra; Apple Silicon, or the CPU
of a Linux x86_64 machine through mlx[cpu]).

MLX streams are thread-local, so the model is loaded and every generate call runs on one
persistent thread. A cancelled call waits until that thread's generate has returned.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from pathlib import Path
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


# prompt tokens read per step (mlx-lm's default is 2048); a stop asked for while the prompt is
# read takes effect at the next step: within about 30-40 s on an x86 CPU, which reads 3-5
# prompt tokens a second here (BENCHMARKS.md)
PREFILL_STEP = 128


class _Stopped(Exception):
    """Raised from mlx-lm's progress callback to stop reading the prompt."""


def model_name(model: str) -> str:
    """The name recorded for a model: a local directory's own name, else the repo id."""
    path = Path(model)
    return path.name if path.is_dir() else model


class MlxLmRuntime:
    """mlx-lm itself, imported on first use so this module imports anywhere. `on_token`,
    if given, is called on the MLX thread with the count after each generated token (the
    benchmark's time to first token, the gate test's "generation has begun")."""

    def __init__(self, on_token: Callable[[int], None] | None = None) -> None:
        self.on_token = on_token

    def load(self, model: str) -> Any:
        try:
            # the optional extra: untyped, and absent where it is not installed
            from mlx_lm import load
        except ImportError as exc:
            raise ConfigError(
                "WORKER_LLM_BACKEND=mlx needs mlx-lm: pip install 'pg-llm-worker[mlx]' "
                "(Apple Silicon, or Linux x86_64 on the CPU)"
            ) from exc
        if not Path(model).is_dir() and model.startswith((".", "/", "~")):
            # mlx-lm would take a missing path for a Hugging Face repo id and try to download
            raise ConfigError(f"WORKER_MLX_MODEL {model!r} is not a directory")
        try:
            found = load(model)  # (model, tokenizer) without return_config
        except (OSError, ValueError) as exc:
            raise ConfigError(f"mlx-lm cannot load {model!r}: {exc}") from exc
        return (model_name(model), found[0], found[1])

    def generate(self, loaded: Any, messages: list[dict[str, str]],
                 request: CompletionRequest[Any], should_stop: Callable[[], bool]) -> RawReply:
        from mlx_lm import stream_generate
        from mlx_lm.sample_utils import make_sampler

        name, model, tokenizer = loaded
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)

        def reading(done: int, total: int) -> None:
            if should_stop():
                raise _Stopped

        parts: list[str] = []
        finish: str | None = None
        prompt_tokens, completion_tokens = len(prompt), 0
        try:
            for step in stream_generate(
                model, tokenizer, prompt, max_tokens=request.max_tokens,
                sampler=make_sampler(temp=request.temperature),
                prefill_step_size=PREFILL_STEP, prompt_progress_callback=reading,
            ):
                parts.append(step.text)
                completion_tokens = step.generation_tokens
                if self.on_token is not None:
                    self.on_token(completion_tokens)
                # "length" when max_tokens cut the reply: the client then refuses it as
                # truncated instead of repairing a cut-off JSON
                finish = step.finish_reason
                if finish is None and should_stop():
                    # checked per token: a cancelled call frees the model within one step
                    finish = "cancelled"
                    break
        except _Stopped:
            finish = "cancelled"
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

    async def answers(self) -> str:
        return "" if self._loaded is not None else "the model is not loaded"

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
