"""Accounting: one queue.model_calls row per round trip, committed on its own connection,
and the per-job and per-day views that sum them."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from pydantic import BaseModel

from tests.support import fake_openai as fo
from tests.support.db import query
from worker.models.accounting import Accountant, CallRecord
from worker.models.client import ModelClient
from worker.models.errors import ModelFinal, ModelRetryable
from worker.models.gate import Gate
from worker.models.openai_backend import OpenAIChat, OpenAIEmbedder, make_client
from worker.models.ratelimit import LimitReached, RateLimit
from worker.models.types import CallContext, CompletionRequest, Message


class Answer(BaseModel):
    answer: int


REQUEST = CompletionRequest[Answer](
    messages=(Message(role="user", content="2+2?"),), output=Answer, max_tokens=50
)


@pytest.fixture
def fake() -> Iterator[fo.FakeOpenAI]:
    with fo.FakeOpenAI() as server:
        yield server


def _job_and_attempt(conn: psycopg.Connection[dict[str, Any]], kind: str) -> tuple[int, int]:
    job = conn.execute(b"SELECT queue.enqueue(%s, 'q:1') AS id", (kind,)).fetchone()
    assert job is not None
    attempt = conn.execute(
        b"INSERT INTO queue.attempts (job_id, attempt, worker_id, claim_xid) "
        b"VALUES (%s, 1, 'test', pg_current_xact_id()) RETURNING id", (job["id"],)).fetchone()
    assert attempt is not None
    return int(job["id"]), int(attempt["id"])


def _client(fake: fo.FakeOpenAI, dsn: str, timeout: float = 10.0) -> ModelClient:
    return ModelClient(
        chat=OpenAIChat(make_client(fake.base_url, None), "chat-model", "json_schema"),
        chat_gate=Gate("local", 1),
        embedder=OpenAIEmbedder(make_client(fake.base_url, None), "embed-model"),
        embed_gate=Gate("local-embed", 1),
        accountant=Accountant(dsn),
        timeout_for=lambda kind: timeout,
    )


def _rows(conn: psycopg.Connection[dict[str, Any]], job_id: int) -> list[dict[str, Any]]:
    return conn.execute(query("model_calls_for_job"), {"job_id": job_id}).fetchall()


def test_every_round_trip_is_recorded_and_the_job_view_sums_them(
    fake: fo.FakeOpenAI, dsn: str, conn: psycopg.Connection[dict[str, Any]]
) -> None:
    job_id, attempt_id = _job_and_attempt(conn, "explanation")
    ctx = CallContext(kind="explanation", job_id=job_id, attempt_id=attempt_id, prompt_version=3)
    fake.script(
        fo.chat("not json", prompt_tokens=100, completion_tokens=7),  # invalid, shown back
        fo.chat_json({"answer": 4}, prompt_tokens=130, completion_tokens=5),  # ok on retry
        fo.server_error(),  # no usage reported
        fo.truncated(),  # tokens spent, reply unusable
    )
    fake.script(fo.embeddings([[0.5, 0.5]], prompt_tokens=9), endpoint="embeddings")

    async def main() -> None:
        client = _client(fake, dsn)
        try:
            result = await client.complete(REQUEST, ctx)
            assert result.retried and result.usage.prompt_tokens == 230
            with pytest.raises(ModelRetryable):
                await client.complete(REQUEST, ctx)
            with pytest.raises(ModelFinal):
                await client.complete(REQUEST, ctx)
            await client.embed(["q"], ctx.model_copy(update={"kind": "explanation"}))
        finally:
            await client.aclose()

    asyncio.run(main())
    rows = _rows(conn, job_id)
    assert [(r["call"], r["round"], r["outcome"], r["error_code"]) for r in rows] == [
        ("chat", 1, "invalid", "invalid_output"),
        ("chat", 2, "ok", None),
        ("chat", 1, "error", "server_error"),
        ("chat", 1, "error", "truncated"),
        ("embedding", 1, "ok", None),
    ]
    assert [(r["prompt_tokens"], r["completion_tokens"]) for r in rows] == [
        (100, 7), (130, 5), (None, None), (20, 10), (9, None)]
    assert {r["attempt_id"] for r in rows} == {attempt_id}
    assert {r["prompt_version"] for r in rows} == {3}
    # the server names the model in each reply; a call that got no reply has the configured one
    assert [r["model"] for r in rows] == [
        "fake-model", "fake-model", "chat-model", "fake-model", "fake-embed"]
    assert [r["gate"] for r in rows] == ["local"] * 4 + ["local-embed"]
    assert all(r["latency_ms"] > 0 and r["gate_wait_ms"] >= 0 for r in rows)

    usage = conn.execute(query("model_usage_for_job"), {"job_id": job_id}).fetchone()
    assert usage is not None
    assert (usage["calls"], usage["attempts"], usage["failed_calls"]) == (5, 1, 3)
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (259, 22)
    assert usage["latency_ms"] == pytest.approx(sum(r["latency_ms"] for r in rows))


def test_rows_survive_the_rollback_of_the_claiming_transaction(
    fake: fo.FakeOpenAI, dsn: str, conn: psycopg.Connection[dict[str, Any]]
) -> None:
    job_id, attempt_id = _job_and_attempt(conn, "explanation")
    fake.script(fo.chat_json({"answer": 4}))

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, row_factory=dict_row) as claim:
            # the claim's lock on the job row: the accounting insert (whose foreign key
            # takes FOR KEY SHARE) must neither wait for it nor join its fate
            await claim.execute(b"SELECT 1 FROM queue.jobs WHERE id = %s FOR NO KEY UPDATE",
                                (job_id,))
            client = _client(fake, dsn)
            try:
                async with asyncio.timeout(30):
                    await client.complete(REQUEST, CallContext(
                        kind="explanation", job_id=job_id, attempt_id=attempt_id))
            finally:
                await client.aclose()
            await claim.rollback()

    asyncio.run(main())
    assert [r["outcome"] for r in _rows(conn, job_id)] == ["ok"]


def test_a_cancelled_call_is_recorded(
    fake: fo.FakeOpenAI, dsn: str, conn: psycopg.Connection[dict[str, Any]]
) -> None:
    job_id, attempt_id = _job_and_attempt(conn, "explanation")
    fake.script(fo.chat_json({"answer": 4}, delay=30.0))

    async def main() -> None:
        client = _client(fake, dsn)
        try:
            task = asyncio.create_task(client.complete(REQUEST, CallContext(
                kind="explanation", job_id=job_id, attempt_id=attempt_id)))
            for _ in range(1000):
                if fake.requests:
                    break
                await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            await client.aclose()

    asyncio.run(main())
    (row,) = _rows(conn, job_id)
    assert (row["outcome"], row["error_code"], row["prompt_tokens"]) == (
        "error", "cancelled", None)


def test_a_timeout_is_recorded_as_one(
    fake: fo.FakeOpenAI, dsn: str, conn: psycopg.Connection[dict[str, Any]]
) -> None:
    job_id, _ = _job_and_attempt(conn, "explanation")
    fake.script(fo.chat_json({"answer": 4}, delay=30.0))

    async def main() -> None:
        client = _client(fake, dsn, timeout=0.2)
        try:
            with pytest.raises(ModelRetryable):
                await client.complete(REQUEST, CallContext(kind="explanation", job_id=job_id))
        finally:
            await client.aclose()

    asyncio.run(main())
    (row,) = _rows(conn, job_id)
    assert (row["outcome"], row["error_code"]) == ("error", "timeout")


def _record(kind: str, model: str, prompt: int | None, completion: int | None,
            outcome: str = "ok") -> CallRecord:
    return CallRecord(
        job_id=None, attempt_id=None, kind=kind, call="chat", backend="openai", model=model,
        gate="g", prompt_version=1, round=1, prompt_tokens=prompt,
        completion_tokens=completion, latency_ms=100.0, gate_wait_ms=10.0,
        outcome=outcome, error_code=None if outcome == "ok" else "timeout",  # type: ignore[arg-type]  # test data
    )


def test_the_daily_view_sums_per_utc_day_kind_and_model(
    dsn: str, conn: psycopg.Connection[dict[str, Any]]
) -> None:
    records = [
        ("2026-03-01 23:30+00", _record("explanation", "gpt-4o", 100, 50)),
        ("2026-03-01 10:00+00", _record("explanation", "gpt-4o", 200, 70)),
        ("2026-03-01 10:00+00", _record("explanation", "gpt-4o", None, None, "error")),
        # 23:30 in Seoul (+09) is 14:30 UTC on the same day: grouping is by UTC day
        ("2026-03-02 23:30+09", _record("explanation", "gpt-4o", 10, 1)),
        ("2026-03-02 00:10+00", _record("weakness_analysis", "gpt-4o", 1000, 400)),
        ("2026-03-02 00:20+00", _record("explanation", "qwen", 5, 5)),
    ]

    async def write() -> list[int]:
        accountant = Accountant(dsn)
        try:
            ids = [await accountant.record(rec) for _, rec in records]
        finally:
            await accountant.aclose()
        assert None not in ids
        return [i for i in ids if i is not None]

    ids = asyncio.run(write())
    for row_id, (at, _) in zip(ids, records, strict=True):
        conn.execute(b"UPDATE queue.model_calls SET created_at = %s WHERE id = %s", (at, row_id))
    conn.execute(b"SET TIME ZONE 'Asia/Seoul'")  # the view must not depend on the session
    rows = conn.execute(query("model_usage_daily"), {"since": "2026-03-01"}).fetchall()
    got = {(str(r["day"]), r["kind"], r["model"]):
           (r["calls"], r["error_calls"], r["prompt_tokens"], r["completion_tokens"],
            r["total_tokens"]) for r in rows}
    assert got == {
        ("2026-03-01", "explanation", "gpt-4o"): (3, 1, 300, 120, 420),
        ("2026-03-02", "explanation", "gpt-4o"): (1, 0, 10, 1, 11),
        ("2026-03-02", "weakness_analysis", "gpt-4o"): (1, 0, 1000, 400, 1400),
        ("2026-03-02", "explanation", "qwen"): (1, 0, 5, 5, 10),
    }
    first = next(r for r in rows if r["kind"] == "explanation" and str(r["day"]) == "2026-03-01")
    assert first["latency_ms"] == 300.0 and first["gate_wait_ms"] == 30.0


def test_a_deleted_job_keeps_its_spend(
    fake: fo.FakeOpenAI, dsn: str, conn: psycopg.Connection[dict[str, Any]]
) -> None:
    job_id, _ = _job_and_attempt(conn, "explanation")
    fake.script(fo.chat_json({"answer": 4}))

    async def main() -> None:
        client = _client(fake, dsn)
        try:
            await client.complete(REQUEST, CallContext(kind="explanation", job_id=job_id))
        finally:
            await client.aclose()

    asyncio.run(main())
    conn.execute(b"DELETE FROM queue.jobs WHERE id = %s", (job_id,))
    row = conn.execute(b"SELECT job_id, attempt_id, prompt_tokens FROM queue.model_calls"
                       ).fetchone()
    assert row == {"job_id": None, "attempt_id": None, "prompt_tokens": 20}


def test_an_unreachable_accounting_database_does_not_fail_the_call(
    fake: fo.FakeOpenAI,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    unreachable = f"postgresql://nobody@127.0.0.1:{port}/none?connect_timeout=2"
    fake.script(fo.chat_json({"answer": 4}))

    async def main() -> tuple[int, int | None]:
        client = _client(fake, unreachable)
        try:
            answer = (await client.complete(REQUEST, CallContext(kind="explanation"))).value
        finally:
            await client.aclose()
        accountant = Accountant(unreachable)
        written = await accountant.record(_record("explanation", "m", 1, 1))
        await accountant.aclose()
        return answer.answer, written

    assert asyncio.run(main()) == (4, None)


def test_the_accounting_row_holds_no_prompt_text(
    fake: fo.FakeOpenAI, dsn: str, conn: psycopg.Connection[dict[str, Any]]
) -> None:
    fake.script(fo.chat_json({"answer": 4}))

    async def main() -> None:
        client = _client(fake, dsn)
        try:
            await client.complete(REQUEST, CallContext(kind="explanation"))
        finally:
            await client.aclose()

    asyncio.run(main())
    row = conn.execute(b"SELECT to_jsonb(m) AS r FROM queue.model_calls m").fetchone()
    assert row is not None
    assert "2+2?" not in json.dumps(row["r"])
    assert row["r"]["job_id"] is None and row["r"]["kind"] == "explanation"


def test_a_model_name_with_nul_or_a_lone_surrogate_is_cleaned_and_recorded(
    fake: fo.FakeOpenAI, dsn: str, conn: psycopg.Connection[dict[str, Any]]
) -> None:
    """A server that names its model with a NUL byte and a lone surrogate broke every job
    (`unknown_error`) and left the spend unrecorded. The name is made storable and clipped
    where it enters; the call and its row go through."""
    job_id, attempt_id = _job_and_attempt(conn, "explanation")
    ctx = CallContext(kind="explanation", job_id=job_id, attempt_id=attempt_id)
    hostile = "evil\x00model\udc80" + "x" * 1000
    fake.script(fo.chat_json({"answer": 4}, model=hostile))
    fake.script(fo.embeddings([[0.5, 0.5]], model=hostile), endpoint="embeddings")

    async def main() -> None:
        client = _client(fake, dsn)
        try:
            result = await client.complete(REQUEST, ctx)
            assert result.value.answer == 4
            assert result.model.startswith("evilmodel\ufffd") and len(result.model) <= 200
            embedded = await client.embed(["q"], ctx)
            assert embedded.model == result.model
        finally:
            await client.aclose()

    asyncio.run(main())
    rows = _rows(conn, job_id)
    assert [(r["call"], r["outcome"]) for r in rows] == [("chat", "ok"), ("embedding", "ok")]
    assert {r["model"] for r in rows} == {result_model(hostile)}


def result_model(name: str) -> str:
    from worker.models.openai_backend import MODEL_NAME_CHARS

    return ("evilmodel\ufffd" + "x" * 1000)[:MODEL_NAME_CHARS]


def test_a_row_that_cannot_be_written_never_fails_the_call(dsn: str) -> None:
    """Bookkeeping must never fail a job: whatever the insert raises is logged."""
    rec = CallRecord.of(CallContext(kind="explanation"), call="chat", backend="openai",
                        model="bad\udc80", gate="g", usage=None, latency_ms=1.0,
                        gate_wait_ms=0.0, outcome="ok")

    async def main() -> None:
        accountant = Accountant(dsn)
        try:
            assert await accountant.record(rec) is None
        finally:
            await accountant.aclose()

    asyncio.run(main())


def test_a_kind_over_its_daily_token_budget_is_deferred_until_the_window_resets(
    fake: fo.FakeOpenAI, dsn: str, conn: psycopg.Connection[dict[str, Any]]
) -> None:
    """WORKER_DAILY_TOKEN_BUDGET: once a kind's calls today (UTC, from queue.model_calls)
    reach its budget, the next call is not made: `budget_exceeded`, retryable after the
    day's end. Another kind is not affected."""
    job_id, attempt_id = _job_and_attempt(conn, "explanation")
    ctx = CallContext(kind="explanation", job_id=job_id, attempt_id=attempt_id)
    fake.script(fo.chat_json({"answer": 4}, prompt_tokens=100, completion_tokens=5),
                fo.chat_json({"answer": 4}, prompt_tokens=100, completion_tokens=5))

    async def main() -> None:
        client = _client(fake, dsn)
        client.daily_token_budget = {"explanation": 50}
        try:
            await client.complete(REQUEST, ctx)  # 105 tokens: under the budget when made
            with pytest.raises(ModelRetryable) as caught:
                await client.complete(REQUEST, ctx)
            assert caught.value.code == "budget_exceeded"
            assert "105 of 50" in caught.value.message
            assert caught.value.delay is not None and 0 < caught.value.delay <= 86_400
            other = ctx.model_copy(update={"kind": "weakness_analysis"})
            assert (await client.complete(REQUEST, other)).value.answer == 4
        finally:
            await client.aclose()

    asyncio.run(main())
    assert len(fake.requests) == 2  # the deferred call never reached the server


def test_a_request_past_the_shared_limit_is_snoozed_without_being_sent(
    fake: fo.FakeOpenAI, dsn: str, conn: psycopg.Connection[dict[str, Any]]
) -> None:
    """With a rate limit of one request per minute and no time to wait for a slot, the
    second call leaves as a snooze (`rate_limited`, due when the slot frees) through the
    OpenAI SDK as our own exception: nothing reaches the server, nothing is recorded."""
    job_id, attempt_id = _job_and_attempt(conn, "explanation")
    ctx = CallContext(kind="explanation", job_id=job_id, attempt_id=attempt_id)
    fake.script(fo.chat_json({"answer": 4}), fo.chat_json({"answer": 4}))

    async def main() -> None:
        client = _client(fake, dsn)
        limit = RateLimit("fake endpoint", 60.0, requests=1)
        client.chat_limit = limit
        client.rate_limit_max_wait = 0.0
        try:
            await client.complete(REQUEST, ctx)
            with pytest.raises(LimitReached) as caught:
                await client.complete(REQUEST, ctx)
            assert caught.value.code == "rate_limited"
            # the limiter counts over the window plus what it keeps in hand (63 s here)
            assert caught.value.delay is not None
            assert 0 < caught.value.delay <= limit.counted_window
            assert "1 requests per 60 s" in caught.value.message
        finally:
            await client.aclose()

    asyncio.run(main())
    assert len(fake.requests) == 1
    calls = conn.execute(b"SELECT count(*) AS n FROM queue.model_calls WHERE job_id = %s",
                         (job_id,)).fetchone()
    assert calls == {"n": 1}
