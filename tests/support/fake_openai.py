"""A fake OpenAI-compatible server on 127.0.0.1 that the real `openai` client talks to.

Each request takes the next scripted reply for its endpoint; every request is recorded with
its body and the times its handling started and ended, for ordering and overlap checks.
"""

from __future__ import annotations

import gzip
import itertools
import json
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Endpoint = Literal["chat", "embeddings", "rerank"]
_PATHS: dict[str, Endpoint] = {"/v1/chat/completions": "chat", "/v1/embeddings": "embeddings",
                               "/v1/rerank": "rerank"}


@dataclass
class Reply:
    """One scripted answer. `delay` is slept before answering (ended early if the client
    hangs up); `await_in_flight` holds the answer until that many requests are in flight."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    await_in_flight: int | None = None


Responder = Callable[["Recorded"], Reply]


@dataclass
class Recorded:
    endpoint: Endpoint | None
    path: str
    headers: dict[str, str]
    body: Any
    started: float
    ended: float | None = None
    status: int | None = None
    disconnected: bool = False


# -- scripts -----------------------------------------------------------------------------------

_ids = itertools.count(1)


def chat(
    content: str | None,
    *,
    finish_reason: str = "stop",
    refusal: str | None = None,
    prompt_tokens: int = 20,
    completion_tokens: int = 10,
    model: str = "fake-model",
    delay: float = 0.0,
    await_in_flight: int | None = None,
) -> Reply:
    body = {
        "id": f"chatcmpl-fake-{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": refusal},
            "finish_reason": finish_reason,
            "logprobs": None,
        }],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }
    return Reply(body=body, delay=delay, await_in_flight=await_in_flight)


def chat_json(value: Any, **kwargs: Any) -> Reply:
    return chat(json.dumps(value, ensure_ascii=False), **kwargs)


def fenced(value: Any, **kwargs: Any) -> Reply:
    return chat(f"```json\n{json.dumps(value, ensure_ascii=False)}\n```", **kwargs)


def with_prose(value: Any, **kwargs: Any) -> Reply:
    text = json.dumps(value, ensure_ascii=False)
    return chat(f"Sure! Here is the answer:\n{text}\nLet me know if you need more.", **kwargs)


def truncated(text: str = '{"answer_choice": 2, "explanation_md": "The first st') -> Reply:
    return chat(text, finish_reason="length")


def refusal(reason: str = "I'm sorry, I can't help with that.") -> Reply:
    return chat(None, refusal=reason)


def content_filter() -> Reply:
    return chat(None, finish_reason="content_filter")


def empty() -> Reply:
    return chat("")


def error(status: int, message: str, *, type: str = "invalid_request_error",
          code: str | int | None = None, headers: dict[str, str] | None = None) -> Reply:
    body = {"error": {"message": message, "type": type, "param": None, "code": code}}
    return Reply(status=status, body=body, headers=headers or {})


def rate_limited(retry_after: str | None = "7", retry_after_ms: str | None = None) -> Reply:
    headers = {}
    if retry_after is not None:
        headers["retry-after"] = retry_after
    if retry_after_ms is not None:
        headers["retry-after-ms"] = retry_after_ms
    return error(429, "Rate limit reached", type="requests", code="rate_limit_exceeded",
                 headers=headers)


def insufficient_quota() -> Reply:
    return error(429, "You exceeded your current quota", type="insufficient_quota",
                 code="insufficient_quota")


def server_error() -> Reply:
    return error(500, "The server had an error", type="server_error")


def slow(reply: Reply, seconds: float) -> Reply:
    reply.delay = seconds
    return reply


def embeddings(vectors: list[list[float]], *, model: str = "fake-embed",
               prompt_tokens: int = 8, delay: float = 0.0) -> Reply:
    body = {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": v}
                 for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
    return Reply(body=body, delay=delay)


def embeddings_for(dim: int, **kwargs: Any) -> Responder:
    """Answers with one `dim`-dimensional vector per input text, whatever their number."""

    def respond(request: Recorded) -> Reply:
        texts = request.body.get("input", [])
        count = len(texts) if isinstance(texts, list) else 1
        return embeddings([[float(i + 1)] * dim for i in range(count)], **kwargs)

    return respond


def llama_cpp(reply: Reply) -> Responder:
    """Like a llama.cpp server: a 400 for `json_schema`, else the given reply."""

    def respond(request: Recorded) -> Reply:
        fmt = request.body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            return error(400, "'json_schema' is not supported; use 'json_object' with 'schema'",
                         code=400)
        return reply

    return respond


# -- the server --------------------------------------------------------------------------------


class FakeOpenAI:
    """Start with `with FakeOpenAI() as fake:`; `fake.base_url` goes to the client."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[Endpoint, deque[Reply | Responder]] = {
            "chat": deque(), "embeddings": deque(), "rerank": deque()}
        self.fallback: dict[Endpoint, Responder] = {}
        self.requests: list[Recorded] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._entered: list[int] = []
        self._in_flight_changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        # a short poll interval keeps shutdown() (once per test) quick
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        name="fake-openai", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def script(self, *replies: Reply | Responder, endpoint: Endpoint = "chat") -> None:
        with self._lock:
            self._queues[endpoint].extend(replies)

    def pending(self, endpoint: Endpoint = "chat") -> int:
        with self._lock:
            return len(self._queues[endpoint])

    def bodies(self, endpoint: Endpoint = "chat") -> list[Any]:
        return [r.body for r in self.requests if r.endpoint == endpoint]

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.requests)} requests, expected {count}")
            time.sleep(0.005)

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        with self._lock:
            self._in_flight_changed.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- request handling (server threads) ------------------------------------------------

    def _next(self, rec: Recorded) -> Reply:
        item: Reply | Responder | None = None
        if rec.endpoint is not None:
            with self._lock:
                queue = self._queues[rec.endpoint]
                item = queue.popleft() if queue else self.fallback.get(rec.endpoint)
        if item is None:
            return error(500, f"fake server: no scripted reply for {rec.path}")
        return item(rec) if callable(item) else item

    def _enter(self) -> int:
        """Count a request in; returns its place in the log of in-flight counts."""
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._entered.append(self.in_flight)
            self._in_flight_changed.notify_all()
            return len(self._entered) - 1

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self._in_flight_changed.notify_all()

    def _await_in_flight(self, since: int, count: int, timeout: float = 5.0) -> None:
        # "reached at some moment since this request came in", not "right now": the
        # request that completed the count may already have answered and left
        with self._lock:
            self._in_flight_changed.wait_for(
                lambda: max(self._entered[since:]) >= count or self._stopping.is_set(),
                timeout)

    def _sleep(self, sock: socket.socket, seconds: float) -> bool:
        """Sleep, watching the socket; True if the client hung up first."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and not self._stopping.is_set():
            readable, _, _ = select.select([sock], [], [], min(left, 0.01))
            if readable:
                try:
                    if sock.recv(1, socket.MSG_PEEK) == b"":
                        return True
                except OSError:
                    return True
        return False

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # without it every reply waits ~40 ms for the client's delayed ACK
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test output is not the place for access logs

            def do_GET(self) -> None:
                self._answer(None)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                self._answer(body)

            def _answer(self, body: Any) -> None:
                path = self.path.split("?", 1)[0]
                rec = Recorded(endpoint=_PATHS.get(path), path=path,
                               headers={k.lower(): v for k, v in self.headers.items()},
                               body=body, started=time.monotonic())
                with fake._lock:
                    fake.requests.append(rec)
                place = fake._enter()
                try:
                    reply = fake._next(rec)
                    if reply.await_in_flight:
                        fake._await_in_flight(place, reply.await_in_flight)
                    if reply.delay and fake._sleep(self.connection, reply.delay):
                        rec.disconnected = True
                        rec.ended = time.monotonic()
                        self.close_connection = True
                        return
                    payload = json.dumps(reply.body).encode()
                    if reply.headers.get("content-encoding") == "gzip":
                        payload = gzip.compress(payload)
                    # recorded before the reply leaves, so a request the client sends after
                    # reading this reply always starts after this one ended
                    rec.status = reply.status
                    rec.ended = time.monotonic()
                finally:
                    fake._leave()
                self.send_response(reply.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    self.wfile.write(payload)
                    self.wfile.flush()
                except OSError:
                    rec.disconnected = True

        return Handler


def overlapping(records: list[Recorded]) -> list[tuple[Recorded, Recorded]]:
    """Pairs of requests whose handling intervals overlap."""
    spans = sorted((r for r in records if r.ended is not None), key=lambda r: r.started)
    return [(a, b) for a, b in itertools.pairwise(spans) if b.started < (a.ended or 0)]

