"""Model gates: no more than `capacity` calls inside the model, no capacity leaked by
cancelled calls, the MLX thread rule, and the advisory-lock gate holding across real processes.

Who is inside a gate is shown by backends that signal on entry and leave when told, by the
fake server's recorded start and end times, or by the database's own lock table; never by
sleeping and seeing that nothing happened.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
from openai import AsyncOpenAI
from pydantic import BaseModel, SecretStr

from tests.support import fake_openai as fo
from worker.errors import ConfigError
from worker.models.client import ModelClient
from worker.models.errors import ModelRetryable
from worker.models.gate import AdvisoryGate, Gate, Gates, RoundTrip, Ticket
from worker.models.mlx_backend import MlxChat
from worker.models.openai_backend import OpenAIChat, OpenAIEmbedder, make_client
from worker.models.types import CallContext, CompletionRequest, Message, RawReply, Usage


class Answer(BaseModel):
    answer: int


REQUEST = CompletionRequest[Answer](
    messages=(Message(role="user", content="2+2?"),), output=Answer, max_tokens=50
)
CTX = CallContext(kind="explanation")


@pytest.fixture
def fake() -> Iterator[fo.FakeOpenAI]:
    with fo.FakeOpenAI() as server:
        yield server


def openai_client(fake: fo.FakeOpenAI, gate: Gate, timeout: float = 10.0) -> ModelClient:
    return ModelClient(
        chat=OpenAIChat(make_client(fake.base_url, SecretStr("k")), "m", "prompt"),
        chat_gate=gate,
        embedder=OpenAIEmbedder(make_client(fake.base_url, None), "e"),
        embed_gate=gate,
        timeout_for=lambda kind: timeout,
    )


async def until(predicate: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Poll a condition another thread or process makes true; False if it never does."""
    for _ in range(int(seconds / 0.005)):
        if predicate():
            return True
        await asyncio.sleep(0.005)
    return predicate()


class HeldChat:
    """A chat backend that stays inside its gate until the test lets it leave.

    `arrived` counts calls that reached the gate; `inside` holds the leave event of each call
    inside it. A call counts as arrived and is either inside or queued at the gate in one step
    (nothing is awaited in between), so once the test sees every call arrived, who is inside
    is settled until the test lets someone leave.
    """

    backend = "held"
    model = "held"

    def __init__(self) -> None:
        self.arrived = 0
        self.inside: list[asyncio.Event] = []
        self.most_inside = 0

    async def answers(self) -> str:
        return ""

    async def chat(self, request: CompletionRequest[Any], trip: RoundTrip) -> RawReply:
        self.arrived += 1
        async with trip.hold():
            leave = asyncio.Event()
            self.inside.append(leave)
            self.most_inside = max(self.most_inside, len(self.inside))
            try:
                await leave.wait()
            finally:
                self.inside.remove(leave)
        return RawReply(text='{"answer": 4}', finish_reason="stop", model=self.model)

    async def start(self) -> None:
        """Nothing to load."""

    async def aclose(self) -> None:
        """Nothing to close."""


# -- in-process capacity ------------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [1, 2])
def test_no_more_than_capacity_calls_are_inside_at_once(capacity: int) -> None:
    chat = HeldChat()

    async def main() -> None:
        gate = Gate("local-model", capacity)
        client = ModelClient(chat=chat, chat_gate=gate)
        calls = [asyncio.create_task(client.complete(REQUEST, CTX)) for _ in range(4)]

        def state() -> tuple[int, int]:
            return sum(call.done() for call in calls), len(chat.inside)

        async def settles(expected: tuple[int, int]) -> bool:
            return await until(lambda: state() == expected)

        assert await until(lambda: chat.arrived == 4)
        # every call has reached the gate: `capacity` of them are in, the others queue
        assert state() == (0, capacity) and gate.in_use == capacity
        for finished in range(1, 5):
            chat.inside[0].set()  # one leaves, and a queued one takes its place
            assert await settles((finished, min(capacity, 4 - finished)))
        results = await asyncio.gather(*calls)
        assert [r.value.answer for r in results] == [4] * 4
        # all but the first `capacity` calls waited at the gate
        assert sum(1 for r in results if r.gate_wait_ms > 0) >= 4 - capacity
        await client.aclose()

    asyncio.run(main())
    assert chat.most_inside == capacity


def test_capacity_one_never_overlaps_inside_the_model(fake: fo.FakeOpenAI) -> None:
    """The same bound on the real path: the SDK against the fake server, judged from the
    server's own record of when it handled each request."""
    for i in range(5):
        fake.script(fo.chat_json({"answer": i}, delay=0.05))

    async def main() -> None:
        gate = Gate("local-model", 1)
        client = openai_client(fake, gate)
        try:
            await asyncio.gather(*(client.complete(REQUEST, CTX) for _ in range(5)))
        finally:
            await client.aclose()
        assert gate.in_use == 0

    asyncio.run(main())
    assert len(fake.requests) == 5
    assert fo.overlapping(fake.requests) == []
    assert fake.max_in_flight == 1


def test_the_gate_covers_only_the_exchange_with_the_server(fake: fo.FakeOpenAI) -> None:
    """The openai backend holds the gate in its HTTP client: building the request and parsing
    the reply happen outside it, so the model is not kept idle by them."""
    fake.script(fo.chat_json({"answer": 3}, delay=0.2))
    gate = Gate("local-model", 1)
    seen: dict[str, int] = {}

    class Watching(OpenAIChat):
        def request_body(self, messages: Any, output: Any) -> Any:
            seen["building"] = gate.in_use
            return super().request_body(messages, output)

        def _reply(self, completion: Any) -> Any:
            seen["parsing"] = gate.in_use
            return super()._reply(completion)

    async def main() -> None:
        client = ModelClient(chat=Watching(make_client(fake.base_url, None), "m", "prompt"),
                             chat_gate=gate, timeout_for=lambda kind: 10.0)
        try:
            call = asyncio.create_task(client.complete(REQUEST, CTX))
            assert await until(lambda: len(fake.requests) == 1)
            seen["at_the_server"] = gate.in_use
            result = await call
            assert result.value.answer == 3 and result.latency_ms >= 200
        finally:
            await client.aclose()

    asyncio.run(main())
    assert seen == {"building": 0, "at_the_server": 1, "parsing": 0}
    assert gate.in_use == 0


def test_with_a_proxy_in_the_environment_the_call_still_passes_its_gate(
    fake: fo.FakeOpenAI, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """httpx then sends through a proxy transport of its own; the gate is held above every
    transport, in the HTTP client's send(), so the proxied request is gated too."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_proxy = f"http://127.0.0.1:{sock.getsockname()[1]}"
    for name in ("http_proxy", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", dead_proxy)
    gate = RecordingGate("local-model", 1)

    async def main() -> None:
        client = openai_client(fake, gate)
        try:
            with pytest.raises(ModelRetryable) as caught:
                await client.complete(REQUEST, CTX)
            assert caught.value.code == "connection_error"
        finally:
            await client.aclose()

    asyncio.run(main())
    assert gate.entries == 1 and gate.in_use == 0
    assert fake.requests == []  # it went to the proxy, which refused it


def test_a_backend_that_answers_without_passing_its_gate_is_an_error(
    fake: fo.FakeOpenAI,
) -> None:
    """An SDK client not built by make_client sends past the gate: the call fails loudly
    instead of passing silently as if it had been gated."""
    fake.script(fo.chat_json({"answer": 1}))

    async def main() -> None:
        sdk = AsyncOpenAI(base_url=fake.base_url, api_key="k", max_retries=0)
        chat = OpenAIChat(sdk, "m", "prompt")
        client = ModelClient(chat=chat, chat_gate=Gate("g", 1), timeout_for=lambda kind: 10.0)
        try:
            with pytest.raises(ConfigError, match="without passing its gate 'g'"):
                await client.complete(REQUEST, CTX)
        finally:
            await client.aclose()

    asyncio.run(main())
    assert len(fake.requests) == 1


def test_capacity_two_lets_two_in_at_once(fake: fo.FakeOpenAI) -> None:
    # each reply is held until two requests are in flight, which only capacity 2 allows
    for i in range(2):
        fake.script(fo.chat_json({"answer": i}, await_in_flight=2))

    async def main() -> None:
        client = openai_client(fake, Gate("remote-api", 2))
        try:
            await asyncio.gather(*(client.complete(REQUEST, CTX) for _ in range(2)))
        finally:
            await client.aclose()

    asyncio.run(main())
    assert fake.max_in_flight == 2
    assert len(fo.overlapping(fake.requests)) == 1


def test_job_kinds_sharing_an_endpoint_share_its_gate(fake: fo.FakeOpenAI) -> None:
    for i in range(3):
        fake.script(fo.chat_json({"answer": i}, delay=0.03))
    for _ in range(3):
        fake.script(fo.embeddings([[1.0, 2.0]], delay=0.03), endpoint="embeddings")

    async def main() -> None:
        gates = Gates()
        shared = gates.get("http://mac-mini:8080/v1", 1)
        assert gates.get("http://mac-mini:8080/v1", 1) is shared
        client = openai_client(fake, shared)
        try:
            await asyncio.gather(
                *(client.complete(REQUEST, CallContext(kind="explanation")) for _ in range(3)),
                *(client.embed(["q"], CallContext(kind="embedding")) for _ in range(3)),
            )
        finally:
            await client.aclose()

    asyncio.run(main())
    assert {r.endpoint for r in fake.requests} == {"chat", "embeddings"}
    assert fo.overlapping(fake.requests) == []


def test_gate_registry_rejects_conflicting_settings() -> None:
    gates = Gates()
    gates.get("a", 1)
    with pytest.raises(ConfigError, match="different settings"):
        gates.get("a", 2)
    with pytest.raises(ConfigError, match="needs a database"):
        gates.get("b", 1, cross_process=True)
    with pytest.raises(ConfigError, match="at least 1"):
        Gate("c", 0)


# -- cancellation -------------------------------------------------------------------------------


def test_a_cancelled_http_call_frees_the_gate_after_its_connection_closed(
    fake: fo.FakeOpenAI,
) -> None:
    fake.script(fo.chat_json({"answer": 0}, delay=30.0), fo.chat_json({"answer": 1}))

    async def main() -> None:
        gate = Gate("local-model", 1)
        client = openai_client(fake, gate)
        try:
            stuck = asyncio.create_task(client.complete(REQUEST, CTX))
            assert await until(lambda: len(fake.requests) == 1)
            assert gate.in_use == 1
            waiting = asyncio.create_task(client.complete(REQUEST, CTX))
            await asyncio.sleep(0)  # let it reach the gate and queue there
            waiting.cancel()  # a waiter cancelled before it got in
            stuck.cancel()
            for task in (stuck, waiting):
                with pytest.raises(asyncio.CancelledError):
                    await task
            assert gate.in_use == 0
            # the abandoned request's connection was closed, not left running
            assert await until(lambda: fake.requests[0].disconnected)
            result = await client.complete(REQUEST, CTX)
            assert result.value.answer == 1
        finally:
            await client.aclose()

    asyncio.run(main())
    assert len(fake.requests) == 2


class RecordingGate(Gate):
    """A gate that counts its holders and notes when it was last released, to order that
    against the work it guarded."""

    entries = 0
    released_at: float | None = None

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[Ticket]:
        self.entries += 1
        try:
            async with super().hold() as ticket:
                yield ticket
        finally:
            self.released_at = time.monotonic()


class FakeRuntime:
    """Stands in for mlx-lm: records threads, blocks until told, signals when it is asked to
    stop (`stop_asked`) and honours that if told to."""

    def __init__(self, honour_stop: bool) -> None:
        self.honour_stop = honour_stop
        self.threads: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.stop_asked = threading.Event()
        self.saw_stop = False
        self.returned_at: float | None = None
        self.loads = 0
        self.load_started = threading.Event()
        self.load_may_finish = threading.Event()
        self.load_may_finish.set()

    def load(self, model: str) -> Any:
        self.threads.append(threading.get_ident())
        self.load_started.set()
        self.load_may_finish.wait(10)
        self.loads += 1
        return model

    def generate(self, loaded: Any, messages: list[dict[str, str]],
                 request: CompletionRequest[Any], should_stop: Callable[[], bool]) -> RawReply:
        self.threads.append(threading.get_ident())
        self.entered.set()
        while not self.release.wait(0.005):
            if should_stop():
                self.stop_asked.set()
                if self.honour_stop:
                    self.saw_stop = True
                    break
        self.returned_at = time.monotonic()
        return RawReply(text=json.dumps({"answer": 4}), finish_reason="stop", model=loaded,
                        usage=Usage(prompt_tokens=3, completion_tokens=2))


def test_mlx_runs_every_call_on_one_dedicated_thread() -> None:
    runtime = FakeRuntime(honour_stop=False)
    runtime.release.set()

    async def main() -> None:
        client = ModelClient(chat=MlxChat("tiny", runtime), chat_gate=Gate("mlx", 1))
        try:
            results = await asyncio.gather(*(client.complete(REQUEST, CTX) for _ in range(3)))
            assert [r.value.answer for r in results] == [4, 4, 4]
            assert results[0].backend == "mlx" and results[0].model == "tiny"
        finally:
            await client.aclose()

    asyncio.run(main())
    assert len(runtime.threads) == 4  # one load, three generates
    assert len(set(runtime.threads)) == 1
    assert runtime.threads[0] != threading.get_ident()


def test_a_model_load_outlasting_a_cancelled_caller_is_kept() -> None:
    runtime = FakeRuntime(honour_stop=False)
    runtime.release.set()
    runtime.load_may_finish.clear()

    async def main() -> None:
        gate = Gate("mlx", 1)
        client = ModelClient(chat=MlxChat("tiny", runtime), chat_gate=gate)
        try:
            first = asyncio.create_task(client.complete(REQUEST, CTX))
            assert await until(runtime.load_started.is_set)
            first.cancel()
            runtime.load_may_finish.set()
            with pytest.raises(asyncio.CancelledError):
                await first
            assert gate.in_use == 0
            await client.start()  # already loaded: nothing to do
            assert (await client.complete(REQUEST, CTX)).value.answer == 4
        finally:
            await client.aclose()

    asyncio.run(main())
    assert runtime.loads == 1


def test_a_cancelled_mlx_call_holds_the_gate_until_generate_returns() -> None:
    runtime = FakeRuntime(honour_stop=False)  # a generate that cannot be interrupted

    async def main() -> None:
        gate = RecordingGate("mlx", 1)
        client = ModelClient(chat=MlxChat("tiny", runtime), chat_gate=gate)
        try:
            task = asyncio.create_task(client.complete(REQUEST, CTX))
            assert await until(runtime.entered.is_set)
            task.cancel()
            # the cancellation has reached the thread, whose generate goes on regardless:
            # until it returns, the call has not given the gate back
            assert await asyncio.to_thread(runtime.stop_asked.wait, 10)
            assert not task.done() and gate.in_use == 1 and gate.released_at is None
            runtime.release.set()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert gate.in_use == 0
            assert runtime.returned_at is not None and gate.released_at is not None
            assert runtime.returned_at <= gate.released_at
        finally:
            await client.aclose()

    asyncio.run(main())


def test_an_mlx_timeout_stops_generation_and_then_frees_the_gate() -> None:
    runtime = FakeRuntime(honour_stop=True)

    async def main() -> None:
        gate = RecordingGate("mlx", 1)
        client = ModelClient(chat=MlxChat("tiny", runtime), chat_gate=gate,
                             timeout_for=lambda kind: 0.1)
        try:
            with pytest.raises(ModelRetryable) as caught:
                await client.complete(REQUEST, CTX)
            assert caught.value.code == "timeout"
            assert runtime.saw_stop and gate.in_use == 0
            assert runtime.returned_at is not None and gate.released_at is not None
            assert runtime.returned_at <= gate.released_at
        finally:
            await client.aclose()

    asyncio.run(main())


# -- across processes ---------------------------------------------------------------------------

GATE_LOG = b"""
CREATE TABLE gate_log (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pid     integer NOT NULL,
    slot    integer,
    entered timestamptz NOT NULL DEFAULT clock_timestamp(),
    left_at timestamptz
)
"""


async def _gate_rounds(dsn: str, name: str, rounds: int, tasks: int) -> None:
    gate = AdvisoryGate(name, 1, dsn, poll_interval=0.005)

    async def one_task() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            for _ in range(rounds):
                async with gate.hold() as ticket:
                    cur = await conn.execute(
                        b"INSERT INTO gate_log (pid, slot) VALUES (%s, %s) RETURNING id",
                        (os.getpid(), ticket.slot))
                    row = await cur.fetchone()
                    assert row is not None
                    await asyncio.sleep(0.01)
                    await conn.execute(
                        b"UPDATE gate_log SET left_at = clock_timestamp() WHERE id = %s",
                        (row[0],))

    try:
        await asyncio.gather(*(one_task() for _ in range(tasks)))
    finally:
        await gate.aclose()


def gate_process(dsn: str, name: str, rounds: int, tasks: int, go: Any) -> None:
    """Entry point of a spawned worker-like process."""
    go.wait(30)
    asyncio.run(_gate_rounds(dsn, name, rounds, tasks))


def hold_gate_process(dsn: str, name: str, holding: Any) -> None:
    """Takes the gate, says so, and waits to be killed."""

    async def main() -> None:
        gate = AdvisoryGate(name, 1, dsn)
        async with gate.hold():
            holding.set()
            await asyncio.sleep(600)

    asyncio.run(main())


def test_the_advisory_gate_holds_across_two_processes(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(GATE_LOG)
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    procs = [ctx.Process(target=gate_process, args=(dsn, "mac-mini-mlx", 5, 2, go))
             for _ in range(2)]
    for proc in procs:
        proc.start()
    go.set()
    for proc in procs:
        proc.join(120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            b"SELECT pid, slot, entered, left_at FROM gate_log ORDER BY entered").fetchall()
    assert len(rows) == 20
    assert len({pid for pid, *_ in rows}) == 2
    assert {slot for _, slot, *_ in rows} == {0}
    for (_, _, _, prev_left), (_, _, entered, _) in itertools.pairwise(rows):
        assert prev_left is not None and prev_left <= entered


def gate_sessions(dsn: str, name: str) -> list[bool]:
    """Whether each session of gate `name` that has tried its lock holds a slot now."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(b"""
            SELECT EXISTS (SELECT FROM pg_locks l WHERE l.pid = a.pid
                           AND l.locktype = 'advisory' AND l.granted)
            FROM pg_stat_activity a
            WHERE a.application_name = %s AND a.datname = current_database()
              AND a.state = 'idle' AND a.query LIKE '%%pg_try_advisory_lock%%'
            """, (f"worker-gate:{name}",)).fetchall()
    return [holds for (holds,) in rows]


def test_a_killed_holder_frees_the_cross_process_gate(dsn: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    holding = ctx.Event()
    proc = ctx.Process(target=hold_gate_process, args=(dsn, "crashy", holding))
    proc.start()
    try:
        assert holding.wait(60)

        async def blocked_then_free() -> int | None:
            gate = AdvisoryGate("crashy", 1, dsn, poll_interval=0.01)
            entered, leave = asyncio.Event(), asyncio.Event()
            slots: list[int | None] = []

            async def take() -> None:
                async with gate.hold() as ticket:
                    slots.append(ticket.slot)
                    entered.set()
                    await leave.wait()

            task = asyncio.create_task(take())
            try:
                # the server's view: the waiter's session has tried the slot and was refused
                assert await until(lambda: sorted(gate_sessions(dsn, "crashy")) == [
                    False, True], seconds=30)
                assert not entered.is_set()
                assert proc.pid is not None
                os.kill(proc.pid, signal.SIGKILL)
                async with asyncio.timeout(30):
                    await entered.wait()
                leave.set()
                await task
            finally:
                task.cancel()
                await gate.aclose()
            return slots[0]

        assert asyncio.run(blocked_then_free()) == 0
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(10)


def test_a_holder_whose_session_was_lost_leaves_cleanly_and_the_gate_goes_on(dsn: str) -> None:
    """The server ended the holder's session (and freed its slot with it): leaving the gate
    is no error, and the next holder gets in on a new session."""

    async def main() -> list[int | None]:
        gate = AdvisoryGate("cut", 1, dsn)
        slots = []
        try:
            async with gate.hold() as ticket:
                slots.append(ticket.slot)
                with psycopg.connect(dsn, autocommit=True) as admin:
                    admin.execute(b"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  b"WHERE application_name = 'worker-gate:cut'")
            async with gate.hold() as ticket:
                slots.append(ticket.slot)
                assert gate_sessions(dsn, "cut") == [True]
        finally:
            await gate.aclose()
        return slots

    assert asyncio.run(main()) == [0, 0]

