"""The worker's HTTP side on a real server: process metrics on /metrics, the queue's gauges on
/metrics/queue (read per scrape, exported by no other path), /healthz and /readyz."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import fake_openai as fake
from tests.support.db import sql
from tests.support.http import free_port, get
from tests.support.inproc import running_worker, until
from tests.support.vectors import DIM, responder
from worker.config import Settings
from worker.health import Health
from worker.kinds import embedding
from worker.models.build import build_client
from worker.models.settings import ModelSettings
from worker.registry import Registry


@pytest.fixture
def model() -> Iterator[fake.FakeOpenAI]:
    with fake.FakeOpenAI() as server:
        yield server


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
           **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _client(base_url: str, dsn: str) -> Any:
    settings = ModelSettings(OPENAI_BASE_URL=base_url, OPENAI_API_KEY="test-key",
                             embed_model="fake-embed", embed_dim=DIM, embed_batch_size=8)
    return Settings(models=settings), build_client(settings, dsn)


def _question(dsn: str) -> int:
    user = sql(dsn, "INSERT INTO app.users (email) VALUES ('m@x') RETURNING id")[0]["id"]
    course = sql(dsn, "INSERT INTO app.courses (user_id, title) VALUES (%s, 'c') RETURNING id",
                 (user,))[0]["id"]
    return int(sql(dsn, "INSERT INTO app.questions (course_id, question_text, choice_1, "
                        "choice_2, choice_3, choice_4, correct_choice) VALUES "
                        "(%s, '변압기의 철손은?', '가', '나', '다', '라', 1) RETURNING id",
                   (course,))[0]["id"])


def test_model_calls_by_outcome_and_code_on_metrics_and_the_queue_on_its_own_path(
        dsn: str, model: fake.FakeOpenAI) -> None:
    """A 429 then a success: /metrics counts the call by kind, outcome and error code and the
    job's snooze and completion; the queue's gauges are on /metrics/queue only."""
    model.script(fake.rate_limited(retry_after="0"), endpoint="embeddings")
    model.fallback["embeddings"] = responder()
    settings, client = _client(model.base_url, dsn)
    registry = Registry()
    registry.register(embedding.kind(settings, client))
    port = free_port()
    pages: dict[str, tuple[int, str]] = {}

    async def main() -> None:
        try:
            async with running_worker(dsn, registry, metrics_port=port,
                                      model_answers=client.answers) as worker:
                first = await asyncio.to_thread(get, port, "/metrics")
                _question(dsn)
                await until(lambda: asyncio.to_thread(
                    sql, dsn, "SELECT 1 FROM queue.jobs WHERE status = 'completed'"),
                    message="the embedding job completed")
                await until(lambda: _ready(worker.health), message="the model check ran")
                for path in ("/metrics", "/metrics/queue", "/healthz", "/readyz"):
                    pages[path] = await asyncio.to_thread(get, port, path)
                pages["first"] = first  # counters are compared as deltas from here
        finally:
            await client.aclose()

    asyncio.run(main())
    before, after = _samples(pages["first"][1]), _samples(pages["/metrics"][1])

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert grew("worker_model_calls_total", kind="embedding", backend="openai",
                outcome="error", error_code="rate_limited") == 1
    assert grew("worker_model_calls_total", kind="embedding", backend="openai",
                outcome="ok", error_code="") == 1
    assert grew("worker_jobs_total", kind="embedding", outcome="snoozed",
                error_code="rate_limited") == 1
    assert grew("worker_jobs_total", kind="embedding", outcome="completed", error_code="") == 1
    assert _value(after, "worker_jobs_in_flight", kind="embedding") == 0
    build = [labels for (name, labels) in after if name == "worker_build_info"]
    assert len(build) == 1 and {k for k, _ in build[0]} == {"version", "python", "psycopg",
                                                            "libpq"}
    # the model latency histogram reaches the longest allowed model timeout (an hour)
    buckets = {float(dict(labels)["le"]) for (name, labels) in after
               if name == "worker_model_latency_seconds_bucket"}
    assert 3600.0 in buckets
    # no fleet-wide series on the per-process path: N workers, one copy of the queue's numbers
    assert not any(name.startswith("worker_queue_") for (name, _) in after)

    status, queue_page = pages["/metrics/queue"]
    queue = _samples(queue_page)
    assert status == 200 and _value(queue, "worker_queue_up") == 1
    assert _value(queue, "worker_queue_jobs", kind="embedding", state="completed") == 1
    assert _value(queue, "worker_queue_live_workers", kind="embedding") == 1
    assert not any(name.startswith(("worker_jobs", "worker_model")) for (name, _) in queue)

    assert pages["/healthz"][0] == 200 and json.loads(pages["/healthz"][1])["loop"] == "ticking"
    ready = json.loads(pages["/readyz"][1])
    assert pages["/readyz"][0] == 200, ready
    assert ready == {"ok": True, "database": "ok", "migrations": "current", "model": "answered"}


async def _ready(health: Health | None) -> bool:
    return health is not None and health.model is not None


def test_readyz_is_503_with_the_reason_for_a_silent_model_and_a_schema_behind(dsn: str) -> None:
    closed = free_port()  # nothing listens there: the model endpoint never answers
    _, client = _client(f"http://127.0.0.1:{closed}/v1", dsn)
    port = free_port()
    pages: list[tuple[int, dict[str, Any]]] = []
    paused_kind = "a.paused"
    sql(dsn, "SELECT queue.pause(%s)", (paused_kind,))

    async def main() -> None:
        try:
            async with running_worker(dsn, Registry(), metrics_port=port,
                                      model_answers=client.answers) as worker:
                await until(lambda: _ready(worker.health), message="the model check ran")
                status, body = await asyncio.to_thread(get, port, "/readyz")
                pages.append((status, json.loads(body)))
                # an operator rolls the schema back by one migration under the running worker
                await asyncio.to_thread(sql, dsn, "DELETE FROM queue.migrations WHERE version = "
                                                  "(SELECT max(version) FROM queue.migrations)")
                status, body = await asyncio.to_thread(get, port, "/readyz")
                pages.append((status, json.loads(body)))
                status, body = await asyncio.to_thread(get, port, "/metrics/queue")
                pages.append((status, {"text": body}))
        finally:
            await client.aclose()

    asyncio.run(main())
    (first_status, first), (second_status, second), (_, queue) = pages
    assert first_status == 503 and first["database"] == "ok" and first["migrations"] == "current"
    assert first["model"] == "openai gpt-4o: APIConnectionError: Connection error.", first
    assert second_status == 503 and second["migrations"].startswith("behind by 1 (first: 00")
    assert _value(_samples(queue["text"]), "worker_queue_paused", kind=paused_kind) == 1


def test_readiness_names_a_database_that_does_not_answer() -> None:
    closed = free_port()
    health = Health(f"host=127.0.0.1 port={closed} user=nobody dbname=none")
    try:
        ok, detail = health.readiness()
    finally:
        health.close()
    assert not ok
    assert detail["database"].startswith("unreachable: ") and detail["migrations"] == "unknown"
    assert detail["model"] == "not checked yet"


def test_healthz_is_503_while_the_event_loop_is_blocked(dsn: str) -> None:
    port = free_port()
    seen: list[tuple[int, dict[str, Any]]] = []

    def probe_during_the_stall() -> None:
        time.sleep(1.5)  # the loop has been blocked for longer than stalled_after by then
        status, body = get(port, "/healthz")
        seen.append((status, json.loads(body)))

    async def main() -> None:
        async with running_worker(dsn, Registry(), metrics_port=port) as worker:
            assert worker.health is not None
            worker.health.stalled_after = 1.0
            status, body = await asyncio.to_thread(get, port, "/healthz")
            seen.append((status, json.loads(body)))
            prober = threading.Thread(target=probe_during_the_stall)
            prober.start()
            time.sleep(3.0)  # noqa: ASYNC251 -- a handler blocking the loop, what the check is for
            await asyncio.to_thread(prober.join)
            await asyncio.sleep(1.5)  # ticking again
            status, body = await asyncio.to_thread(get, port, "/healthz")
            seen.append((status, json.loads(body)))

    asyncio.run(main())
    assert [(status, body["loop"]) for status, body in seen] == [
        (200, "ticking"), (503, "stalled"), (200, "ticking")]
