"""The one interface job kinds call: structured completions and embeddings, each round trip
through the endpoint's gate, checked, repaired, validated and recorded in queue.model_calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from worker import metrics
from worker.errors import ConfigError
from worker.models import ratelimit, structured
from worker.models.accounting import Accountant, CallOutcome, CallRecord
from worker.models.errors import ModelDeferred, ModelFinal, ModelRetryable, ModelSnoozed
from worker.models.gate import Gate, RoundTrip
from worker.models.ratelimit import RateLimit
from worker.models.types import (
    CallContext,
    CompletionRequest,
    CompletionResult,
    EmbeddingResult,
    OutT,
    RawReply,
    Usage,
)

log = structlog.get_logger("worker.models")


class ChatBackend(Protocol):
    """A chat model. chat() holds `trip` (the round trip's gate and deadline) around the time
    the model works on the request: the HTTP exchange, or the generate on the MLX thread.
    start() loads what the backend needs before jobs run (an in-process model)."""

    backend: str
    model: str

    async def start(self) -> None: ...

    async def answers(self) -> str:
        """Empty when the model answers (a server replied, an in-process model is loaded),
        else why not, in one line."""
        ...

    async def chat(self, request: CompletionRequest[Any], trip: RoundTrip) -> RawReply: ...

    async def aclose(self) -> None: ...


class EmbeddingBackend(Protocol):
    """An embedding model; embed() holds `trip` as ChatBackend.chat does."""

    backend: str
    model: str

    async def embed(
        self, texts: Sequence[str], role: str | None, trip: RoundTrip
    ) -> tuple[list[list[float]], str, Usage]: ...

    async def start(self) -> None: ...

    async def answers(self) -> str: ...

    async def aclose(self) -> None: ...


def check_reply(reply: RawReply, output: type[OutT], backend: str) -> tuple[OutT, bool]:
    """The reply's object and whether it was repaired. Raises ModelFinal for a refusal, a
    content-filter stop or a truncated reply, InvalidOutput for anything unparseable."""
    where = {"backend": backend, "model": reply.model, "raw": reply.text}
    if reply.refusal:
        raise ModelFinal("refused", f"the model refused: {reply.refusal}", **where)
    if reply.finish_reason == "content_filter":
        raise ModelFinal("content_filter", "the reply was stopped by a content filter", **where)
    if reply.finish_reason == "length":
        # final: the same request with the same max_tokens is cut at the same place, and a
        # cut-off JSON "repaired" into a valid object would be silently incomplete
        raise ModelFinal("truncated", "the reply hit max_tokens and was cut off", **where)
    return structured.parse(reply.text, output)


class ModelClient:
    """What job kinds hold: one per worker process, shared by every kind (see build_client).
    timeout_for(kind) bounds each round trip once it is inside its gate."""

    def __init__(
        self,
        *,
        chat: ChatBackend | None = None,
        chat_gate: Gate | None = None,
        embedder: EmbeddingBackend | None = None,
        embed_gate: Gate | None = None,
        accountant: Accountant | None = None,
        timeout_for: Callable[[str], float] = lambda kind: 60.0,
        embed_batch_size: int = 32,
        daily_token_budget: dict[str, int] | None = None,
        chat_limit: RateLimit | None = None,
        embed_limit: RateLimit | None = None,
        rate_limit_max_wait: float = 30.0,
    ) -> None:
        self.chat_backend = chat
        self.chat_gate = chat_gate or Gate("chat", 1)
        self.embedder = embedder
        self.embed_gate = embed_gate or Gate("embedding", 1)
        self.accountant = accountant
        self.timeout_for = timeout_for
        self.embed_batch_size = embed_batch_size
        # tokens a kind's calls may use per UTC day (from queue.model_calls); none: no limit
        self.daily_token_budget = daily_token_budget or {}
        # each endpoint's limits, shared by the fleet through queue.rate_take
        self.chat_limit, self.embed_limit = chat_limit, embed_limit
        self.rate_limit_max_wait = rate_limit_max_wait

    async def start(self) -> None:
        """Prepare backends that load something (an in-process model) before jobs run."""
        for backend in (self.chat_backend, self.embedder):
            if backend is not None:
                await backend.start()

    async def answers(self) -> str:
        """Empty when every backend answers, else why the first that does not."""
        for backend in (self.chat_backend, self.embedder):
            if backend is not None:
                reason = await backend.answers()
                if reason:
                    return f"{backend.backend} {backend.model}: {reason}"
        return ""

    # -- accounting ---------------------------------------------------------------------------

    async def _record(self, rec: CallRecord) -> None:
        metrics.model_called(rec.kind, rec.backend, rec.model, rec.outcome, rec.error_code,
                             rec.latency_ms / 1000,
                             rec.gate or "", rec.gate_wait_ms / 1000, rec.prompt_tokens or 0,
                             rec.completion_tokens or 0)
        log.info("model_call", kind=rec.kind, job_id=rec.job_id, attempt_id=rec.attempt_id,
                 call=rec.call, backend=rec.backend, model=rec.model, round=rec.round,
                 outcome=rec.outcome, error_code=rec.error_code,
                 prompt_tokens=rec.prompt_tokens, completion_tokens=rec.completion_tokens,
                 latency_ms=rec.latency_ms, gate_wait_ms=rec.gate_wait_ms)
        if self.accountant is not None:
            # shielded: a job cancelled mid-call has still spent what it spent
            await asyncio.shield(self.accountant.record(rec))

    def _pacer(self, limit: RateLimit | None, tokens: int) -> Callable[[], Awaitable[None]] | None:
        """What the round trip awaits inside its gate when the endpoint has a limit."""
        accountant = self.accountant
        if limit is None or accountant is None:
            return None
        return functools.partial(ratelimit.pace, limit, tokens, accountant.take_rate,
                                 self.rate_limit_max_wait)

    @contextlib.asynccontextmanager
    async def _round_trip(
        self, gate: Gate, deadline: float, record: _Recorder, backend: str,
        limit: RateLimit | None = None, tokens: int = 0,
    ) -> AsyncIterator[RoundTrip]:
        """One round trip, for the backend to hold: inside `gate`, bounded by `deadline`
        seconds once inside (the wait at the gate does not count), after a slot of the
        endpoint's `limit`. A failed one is recorded, then re-raised; one that never passed
        its gate is refused. A 429, or a reply whose x-ratelimit-* headers say nothing is
        left, holds the fleet's requests to the endpoint back."""
        trip = RoundTrip(gate, deadline, pace=self._pacer(limit, tokens))
        try:
            yield trip
        except ratelimit.LimitReached:
            raise  # no request was sent: nothing to record
        except ModelSnoozed as exc:
            await self._record(record(trip, "error", exc.code, None))
            if limit is not None and self.accountant is not None:
                await self.accountant.block_rate(limit.key, exc.delay or 1.0)
            raise
        except TimeoutError as exc:
            await self._record(record(trip, "error", "timeout", None))
            raise ModelRetryable(
                "timeout", f"no answer within {deadline:g} s", backend=backend
            ) from exc
        except (ModelRetryable, ModelFinal) as exc:
            await self._record(record(trip, "error", exc.code, None))
            raise
        except asyncio.CancelledError:
            await self._record(record(trip, "error", "cancelled", None))
            raise
        if not trip.held:
            raise ConfigError(f"a {backend} call was answered without passing its gate "
                              f"{gate.name!r}")
        await self._honour_headers(trip, limit, tokens)

    async def _honour_headers(self, trip: RoundTrip, limit: RateLimit | None,
                              tokens: int) -> None:
        """A reply whose x-ratelimit-* headers say the endpoint has nothing left holds the
        fleet's requests to it until the reset, as a 429 does (queue.rate_block)."""
        if limit is None or self.accountant is None or trip.headers is None:
            return
        hold = ratelimit.header_hold(trip.headers, tokens)
        if hold is not None:
            log.info("rate_limit_hold", key=limit.key, seconds=round(hold, 3),
                     source="x-ratelimit")
            await self.accountant.block_rate(limit.key, hold)

    async def _check_budget(self, kind: str) -> None:
        """A kind that has used its daily token budget makes no more calls today: the job
        is retried after the day ends (UTC)."""
        budget = self.daily_token_budget.get(kind)
        if budget is None or self.accountant is None:
            return
        spent, resets_in = await self.accountant.spent_today(kind)
        if spent >= budget:
            raise ModelDeferred(
                "budget_exceeded", f"{kind} has used {spent} of {budget} tokens today (UTC, "
                "WORKER_DAILY_TOKEN_BUDGET); retried after the day ends", resets_in)

    # -- completions --------------------------------------------------------------------------

    async def complete(
        self, request: CompletionRequest[OutT], ctx: CallContext
    ) -> CompletionResult[OutT]:
        """One structured completion: at most two round trips (the second shows the model
        why its first reply was unusable)."""
        chat = self.chat_backend
        if chat is None:
            raise ConfigError("no chat model is configured")
        await self._check_budget(ctx.kind)
        timeout = request.timeout or self.timeout_for(ctx.kind)
        sent: CompletionRequest[Any] = request
        usage, latency_ms, wait_ms = Usage(), 0.0, 0.0
        for round_ in (1, 2):
            record = _chat_recorder(ctx, chat, self.chat_gate.name, round_)
            async with self._round_trip(self.chat_gate, timeout, record, chat.backend,
                                        self.chat_limit, _tokens(sent)) as trip:
                reply = await chat.chat(sent, trip)
            usage, latency_ms = usage + reply.usage, latency_ms + trip.latency_ms
            wait_ms += trip.wait_ms
            try:
                value, repaired = check_reply(reply, request.output, chat.backend)
            except ModelFinal as exc:
                await self._record(record(trip, "error", exc.code, reply))
                raise
            except structured.InvalidOutput as exc:
                if round_ == 1:
                    await self._record(record(trip, "invalid", "invalid_output", reply))
                    shown = (*request.messages, *structured.correction(reply.text, exc.reason))
                    sent = request.model_copy(update={"messages": shown})
                    continue
                await self._record(record(trip, "error", "parse_fail", reply))
                raise ModelRetryable(
                    "parse_fail", f"unusable reply after one retry: {exc.reason}",
                    raw=reply.text, backend=chat.backend, model=reply.model,
                ) from None
            await self._record(record(trip, "ok", None, reply))
            return CompletionResult[OutT](
                value=value, raw_text=reply.text or "", finish_reason=reply.finish_reason,
                usage=usage, model=reply.model, backend=chat.backend,
                latency_ms=round(latency_ms, 3), gate_wait_ms=round(wait_ms, 3),
                repaired=repaired, retried=round_ > 1,
            )
        raise AssertionError("unreachable: the second round returns or raises")

    # -- embeddings ---------------------------------------------------------------------------

    async def embed(
        self, texts: Sequence[str], ctx: CallContext, role: str | None = None
    ) -> EmbeddingResult:
        """Vectors for `texts`, in order, one round trip per embed_batch_size texts; each
        round trip gets the job kind's timeout. `role` (query | passage) reaches servers
        that distinguish them (WORKER_EMBED_INPUT_TYPE)."""
        embedder = self.embedder
        if embedder is None:
            raise ConfigError("no embedding model is configured")
        if not texts:
            raise ValueError("embed() needs at least one text")
        await self._check_budget(ctx.kind)
        limit = self.timeout_for(ctx.kind)
        record = _embed_recorder(ctx, embedder, self.embed_gate.name)
        vectors: list[list[float]] = []
        usage, latency_ms, wait_ms, model = Usage(), 0.0, 0.0, embedder.model
        for start in range(0, len(texts), self.embed_batch_size):
            batch = texts[start : start + self.embed_batch_size]
            async with self._round_trip(self.embed_gate, limit, record, embedder.backend,
                                        self.embed_limit,
                                        sum(len(t) for t in batch) // 3 + 1) as trip:
                got, model, used = await embedder.embed(batch, role, trip)
            await self._record(record(trip, "ok", None, _Used(model, used)))
            vectors.extend(got)
            usage, latency_ms = usage + used, latency_ms + trip.latency_ms
            wait_ms += trip.wait_ms
        dims = {len(v) for v in vectors}
        if len(dims) != 1:
            raise ModelRetryable("server_error", f"vectors of mixed dimensions {sorted(dims)}",
                                 backend=embedder.backend, model=model)
        return EmbeddingResult(
            vectors=tuple(tuple(v) for v in vectors), model=model, dimensions=dims.pop(),
            usage=usage, backend=embedder.backend, latency_ms=round(latency_ms, 3),
            gate_wait_ms=round(wait_ms, 3),
        )

    async def aclose(self) -> None:
        for backend in (self.chat_backend, self.embedder):
            if backend is not None:
                await backend.aclose()
        for gate in {id(g): g for g in (self.chat_gate, self.embed_gate)}.values():
            await gate.aclose()
        if self.accountant is not None:
            await self.accountant.aclose()


def _tokens(request: CompletionRequest[Any]) -> int:
    """A request's tokens as a rate limit counts them before the reply: its prompt (about
    three characters a token for mixed Korean and English) plus the most it may generate."""
    return sum(len(m.content) for m in request.messages) // 3 + request.max_tokens


@dataclass(frozen=True)
class _Used:
    """The model and usage of a finished round trip (a RawReply carries the same two)."""

    model: str
    usage: Usage


class _Recorder(Protocol):
    def __call__(
        self, trip: RoundTrip, outcome: CallOutcome, code: str | None, done: RawReply | _Used | None
    ) -> CallRecord: ...


def _chat_recorder(ctx: CallContext, chat: ChatBackend, gate: str, round_: int) -> _Recorder:
    def record(
        trip: RoundTrip, outcome: CallOutcome, code: str | None, done: RawReply | _Used | None
    ) -> CallRecord:
        return CallRecord.of(
            ctx, call="chat", backend=chat.backend, model=done.model if done else chat.model,
            gate=gate, usage=done.usage if done else None, latency_ms=trip.latency_ms,
            gate_wait_ms=trip.wait_ms, outcome=outcome, error_code=code, round=round_,
        )

    return record


def _embed_recorder(ctx: CallContext, embedder: EmbeddingBackend, gate: str) -> _Recorder:
    def record(
        trip: RoundTrip, outcome: CallOutcome, code: str | None, done: RawReply | _Used | None
    ) -> CallRecord:
        return CallRecord.of(
            ctx, call="embedding", backend=embedder.backend,
            model=done.model if done else embedder.model, gate=gate,
            usage=done.usage if done else None, latency_ms=trip.latency_ms,
            gate_wait_ms=trip.wait_ms, outcome=outcome, error_code=code,
        )

    return record
