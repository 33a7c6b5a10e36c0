"""The openai backend: the real `openai` client against the fake server, fault by fault.

Each fault is traced to the exception it raises and, through worker/retry.py's classify,
to the job outcome it leads to (docs/models.md's fault table names these tests).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field, SecretStr

from tests.support import fake_openai as fo
from worker.config import load_settings
from worker.errors import ConfigError
from worker.job import Job, Outcome
from worker.models.build import build_client, check_embedding_dimension
from worker.models.client import ModelClient
from worker.models.errors import ModelFinal, ModelRetryable, ModelSnoozed
from worker.models.gate import Gate
from worker.models.mlx_backend import MlxChat
from worker.models.openai_backend import OpenAIChat, OpenAIEmbedder, make_client
from worker.models.settings import ModelSettings
from worker.models.types import (
    CallContext,
    CompletionRequest,
    CompletionResult,
    JsonMode,
    Message,
)
from worker.retry import classify


class Envelope(BaseModel):
    answer_choice: int = Field(ge=1, le=4)
    explanation_md: str = Field(min_length=1)
    confidence: Literal["high", "medium", "low"]


GOOD = {"answer_choice": 2, "explanation_md": "**2** 가 맞습니다.", "confidence": "high"}
EXPECTED = Envelope.model_validate(GOOD)
KEY = "sk-test-abcdefghijklmnop"
CTX = CallContext(kind="explanation")
REQUEST = CompletionRequest[Envelope](
    messages=(Message(role="system", content="Explain."), Message(role="user", content="1+1?")),
    output=Envelope, max_tokens=300, temperature=0.1,
)


@pytest.fixture
def fake() -> Iterator[fo.FakeOpenAI]:
    with fo.FakeOpenAI() as server:
        yield server


@asynccontextmanager
async def client_for(
    base_url: str, mode: JsonMode = "json_schema", kind_timeout: float = 10.0, batch: int = 32
) -> AsyncIterator[ModelClient]:
    client = ModelClient(
        chat=OpenAIChat(make_client(base_url, SecretStr(KEY)), "fake-model", mode),
        chat_gate=Gate("fake-chat", 1),
        embedder=OpenAIEmbedder(make_client(base_url, None), "fake-embed"),
        embed_gate=Gate("fake-embed", 2),
        timeout_for=lambda kind: kind_timeout,
        embed_batch_size=batch,
    )
    try:
        yield client
    finally:
        await client.aclose()


def complete(fake: fo.FakeOpenAI, mode: JsonMode = "json_schema",
             timeout: float = 10.0) -> CompletionResult[Envelope]:
    async def main() -> CompletionResult[Envelope]:
        async with client_for(fake.base_url, mode, timeout) as client:
            return await client.complete(REQUEST, CTX)

    return asyncio.run(main())


def failure(fake: fo.FakeOpenAI, mode: JsonMode = "json_schema",
            timeout: float = 10.0) -> ModelRetryable | ModelFinal:
    with pytest.raises((ModelRetryable, ModelFinal)) as caught:
        complete(fake, mode, timeout)
    assert isinstance(caught.value, ModelRetryable | ModelFinal)
    return caught.value


async def until(predicate: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Poll a condition another thread makes true; False if it never does."""
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


def outcome(exc: BaseException, attempt: int, max_attempts: int = 2) -> Outcome:
    job = Job(id=1, kind="explanation", subject="q:1", payload={}, priority=0,
              max_attempts=max_attempts, created_at=datetime.now(UTC), attempt=attempt,
              attempt_id=None)
    return classify(exc, job, base=2.0, cap=300.0)


def assert_retried_then_failed(exc: BaseException, code: str) -> None:
    first = outcome(exc, attempt=1)
    assert (first.status, first.attempt_outcome, first.error_code) == ("pending", "retry", code)
    last = outcome(exc, attempt=2)
    assert (last.status, last.error_code) == ("failed", code)


def assert_failed_at_once(exc: BaseException, code: str) -> None:
    first = outcome(exc, attempt=1)
    assert (first.status, first.attempt_outcome, first.error_code) == ("failed", "failed", code)


# -- success paths ------------------------------------------------------------------------------


def test_valid_json_is_parsed_into_the_model(fake: fo.FakeOpenAI) -> None:
    fake.script(fo.chat_json(GOOD))
    result = complete(fake)
    assert result.value == EXPECTED
    assert result.raw_text == json.dumps(GOOD, ensure_ascii=False)
    assert (result.finish_reason, result.model, result.backend) == ("stop", "fake-model", "openai")
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (20, 10)
    assert not result.repaired and not result.retried
    assert result.latency_ms > 0 and result.gate_wait_ms >= 0
    (request,) = fake.requests
    body = request.body
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert (body["model"], body["max_tokens"], body["temperature"]) == ("fake-model", 300, 0.1)
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["strict"] is True
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["messages"][0]["content"] == "Explain."  # the schema travels in response_format


def test_fenced_json_is_repaired(fake: fo.FakeOpenAI) -> None:
    fake.script(fo.fenced(GOOD))
    result = complete(fake)
    assert result.value.answer_choice == 2 and result.repaired and not result.retried
    assert len(fake.requests) == 1


def test_json_with_prose_around_it_is_repaired(fake: fo.FakeOpenAI) -> None:
    fake.script(fo.with_prose(GOOD))
    result = complete(fake)
    assert result.value == EXPECTED and result.repaired


def test_an_invalid_reply_gets_one_retry_that_shows_the_error(fake: fo.FakeOpenAI) -> None:
    fake.script(fo.chat_json({**GOOD, "answer_choice": 7}), fo.chat_json(GOOD))
    result = complete(fake)
    assert result.value.answer_choice == 2 and result.retried
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (40, 20)
    first, second = fake.bodies()
    assert len(second["messages"]) == len(first["messages"]) + 2
    assistant, correction = second["messages"][-2:]
    assert assistant == {"role": "assistant",
                         "content": json.dumps({**GOOD, "answer_choice": 7}, ensure_ascii=False)}
    assert correction["role"] == "user"
    assert "answer_choice: Input should be less than or equal to 4" in correction["content"]


# -- faults -------------------------------------------------------------------------------------


def test_invalid_twice_is_parse_fail_with_the_raw_reply(fake: fo.FakeOpenAI) -> None:
    long_prose = "I think the answer is two, because " + "reasons " * 300
    fake.script(fo.chat(long_prose), fo.chat(long_prose))
    exc = failure(fake)
    assert isinstance(exc, ModelRetryable) and exc.code == "parse_fail"
    assert "no JSON" in exc.reason
    assert exc.raw_excerpt == long_prose[:1000]
    assert len(fake.requests) == 2
    assert_retried_then_failed(exc, "parse_fail")


def test_empty_content_is_parse_fail(fake: fo.FakeOpenAI) -> None:
    fake.script(fo.empty(), fo.empty())
    exc = failure(fake)
    assert exc.code == "parse_fail" and "empty" in exc.reason
    assert_retried_then_failed(exc, "parse_fail")


def test_a_truncated_reply_is_final_and_not_retried(fake: fo.FakeOpenAI) -> None:
    fake.script(fo.truncated(), fo.chat_json(GOOD))
    exc = failure(fake)
    assert isinstance(exc, ModelFinal) and exc.code == "truncated"
    assert exc.raw_excerpt and exc.raw_excerpt.startswith('{"answer_choice": 2')
    assert len(fake.requests) == 1 and fake.pending() == 1
    assert_failed_at_once(exc, "truncated")


def test_429_is_rate_limited_and_honours_retry_after(fake: fo.FakeOpenAI) -> None:
    fake.script(fo.rate_limited(retry_after="7"))
    exc = failure(fake)
    assert isinstance(exc, ModelSnoozed) and exc.code == "rate_limited" and exc.delay == 7.0
    for attempt in (1, 2):  # snoozed, not failed, even on the last attempt
        snoozed = outcome(exc, attempt=attempt)
        assert (snoozed.status, snoozed.attempt_outcome, snoozed.retry_in) == (
            "pending", "snoozed", 7.0)
    assert len(fake.requests) == 1  # the SDK itself never retries


def test_429_retry_after_ms_is_preferred(fake: fo.FakeOpenAI) -> None:
    fake.script(fo.rate_limited(retry_after="7", retry_after_ms="1500"))
    exc = failure(fake)
    assert isinstance(exc, ModelRetryable) and exc.delay == 1.5


def test_429_insufficient_quota_is_final(fake: fo.FakeOpenAI) -> None:
    fake.script(fo.insufficient_quota())
    exc = failure(fake)
    assert isinstance(exc, ModelFinal) and exc.code == "quota_exhausted"
    assert_failed_at_once(exc, "quota_exhausted")


def test_500_is_a_retryable_server_error(fake: fo.FakeOpenAI) -> None:
    fake.script(fo.server_error())
    exc = failure(fake)
    assert isinstance(exc, ModelRetryable) and exc.code == "server_error"
    assert len(fake.requests) == 1
    assert_retried_then_failed(exc, "server_error")


def test_other_4xx_is_a_final_bad_request(fake: fo.FakeOpenAI) -> None:
    fake.script(fo.error(401, "Incorrect API key provided", code="invalid_api_key"))
    exc = failure(fake)
    assert isinstance(exc, ModelFinal) and exc.code == "bad_request"
    assert KEY not in exc.message
    assert_failed_at_once(exc, "bad_request")


def test_a_server_side_408_is_a_timeout(fake: fo.FakeOpenAI) -> None:
    fake.script(fo.error(408, "Request timed out while waiting for the model"))
    exc = failure(fake)
    assert isinstance(exc, ModelRetryable) and exc.code == "timeout"
    assert_retried_then_failed(exc, "timeout")


def test_a_reply_slower_than_the_timeout_is_a_timeout(fake: fo.FakeOpenAI) -> None:
    fake.script(fo.slow(fo.chat_json(GOOD), 30.0))

    async def main() -> ModelRetryable | ModelFinal:
        async with client_for(fake.base_url, kind_timeout=0.3) as client:
            with pytest.raises((ModelRetryable, ModelFinal)) as caught:
                await client.complete(REQUEST, CTX)
            # with the client still open: the timeout itself closed the HTTP connection
            assert await until(lambda: fake.requests[0].disconnected)
            assert client.chat_gate.in_use == 0
            assert isinstance(caught.value, ModelRetryable | ModelFinal)
            return caught.value

    exc = asyncio.run(main())
    assert isinstance(exc, ModelRetryable) and exc.code == "timeout"
    assert_retried_then_failed(exc, "timeout")


def test_a_refusal_is_final(fake: fo.FakeOpenAI) -> None:
    fake.script(fo.refusal())
    exc = failure(fake)
    assert isinstance(exc, ModelFinal) and exc.code == "refused"
    assert "can't help" in exc.reason
    assert_failed_at_once(exc, "refused")


def test_a_content_filter_stop_is_final(fake: fo.FakeOpenAI) -> None:
    fake.script(fo.content_filter())
    exc = failure(fake)
    assert isinstance(exc, ModelFinal) and exc.code == "content_filter"
    assert_failed_at_once(exc, "content_filter")


def test_a_refused_connection_is_a_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # nothing listens on the port any more

    async def main() -> None:
        async with client_for(f"http://127.0.0.1:{port}/v1") as client:
            await client.complete(REQUEST, CTX)

    with pytest.raises(ModelRetryable) as caught:
        asyncio.run(main())
    assert caught.value.code == "connection_error"
    assert_retried_then_failed(caught.value, "connection_error")


# -- servers that differ ------------------------------------------------------------------------


def test_prompt_mode_for_a_server_that_ignores_response_format(fake: fo.FakeOpenAI) -> None:
    fake.script(fo.with_prose(GOOD))
    result = complete(fake, mode="prompt")
    assert result.value == EXPECTED and result.repaired
    (body,) = fake.bodies()
    assert "response_format" not in body
    system = body["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("Explain.\n\n")
    assert '"explanation_md"' in system["content"]


def test_llama_cpp_rejects_json_schema_with_a_final_bad_request(fake: fo.FakeOpenAI) -> None:
    fake.script(fo.llama_cpp(fo.chat_json(GOOD)))
    exc = failure(fake, mode="json_schema")
    assert isinstance(exc, ModelFinal) and exc.code == "bad_request"
    assert "json_schema" in exc.reason


def test_llama_cpp_takes_json_object_with_a_schema(fake: fo.FakeOpenAI) -> None:
    fake.script(fo.llama_cpp(fo.chat_json(GOOD)))
    result = complete(fake, mode="json_object_schema")
    assert result.value == EXPECTED
    (body,) = fake.bodies()
    assert body["response_format"]["type"] == "json_object"
    assert body["response_format"]["schema"]["required"] == [
        "answer_choice", "explanation_md", "confidence"]


def test_max_completion_tokens_can_replace_max_tokens(fake: fo.FakeOpenAI) -> None:
    fake.script(fo.chat_json(GOOD))

    async def main() -> None:
        chat = OpenAIChat(make_client(fake.base_url, None), "o-model",
                          token_field="max_completion_tokens")
        client = ModelClient(chat=chat)
        try:
            await client.complete(REQUEST, CTX)
        finally:
            await client.aclose()

    asyncio.run(main())
    (body,) = fake.bodies()
    assert body["max_completion_tokens"] == 300 and "max_tokens" not in body


# -- embeddings ---------------------------------------------------------------------------------


def test_embeddings_come_back_in_order_in_batches(fake: fo.FakeOpenAI) -> None:
    fake.fallback["embeddings"] = fo.embeddings_for(4)

    async def main() -> Any:
        async with client_for(fake.base_url, batch=2) as client:
            return await client.embed(["a", "b", "c", "d", "e"], CallContext(kind="embedding"))

    result = asyncio.run(main())
    assert result.dimensions == 4 and result.model == "fake-embed"
    assert [v[0] for v in result.vectors] == [1.0, 2.0, 1.0, 2.0, 1.0]
    assert result.usage.prompt_tokens == 24 and result.usage.completion_tokens is None
    bodies = fake.bodies("embeddings")
    assert [b["input"] for b in bodies] == [["a", "b"], ["c", "d"], ["e"]]
    assert all(b["encoding_format"] == "float" and "dimensions" not in b for b in bodies)


def test_an_embedding_server_error_is_retryable(fake: fo.FakeOpenAI) -> None:
    fake.script(fo.server_error(), endpoint="embeddings")

    async def main() -> None:
        async with client_for(fake.base_url) as client:
            await client.embed(["a"], CallContext(kind="embedding"))

    with pytest.raises(ModelRetryable) as caught:
        asyncio.run(main())
    assert caught.value.code == "server_error"


def test_the_embedding_dimension_check(fake: fo.FakeOpenAI) -> None:
    fake.fallback["embeddings"] = fo.embeddings_for(8)

    async def main(expected: int) -> int:
        async with client_for(fake.base_url) as client:
            return await check_embedding_dimension(client, expected)

    assert asyncio.run(main(8)) == 8
    with pytest.raises(ConfigError, match="returns 8-dimensional vectors, but 1024"):
        asyncio.run(main(1024))


# -- configuration ------------------------------------------------------------------------------


def test_a_client_built_from_settings_talks_to_the_configured_server(
    fake: fo.FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("WORKER_LLM_MODEL", "local-model")
    monkeypatch.setenv("WORKER_LLM_JSON_MODE", "json_object_schema")
    monkeypatch.setenv("WORKER_LLM_TIMEOUTS", "explanation=12")
    settings = load_settings().models
    assert KEY not in repr(settings) and KEY not in str(settings.model_dump())
    assert settings.timeout_for("explanation") == 12.0
    assert settings.timeout_for("embedding") == 15.0
    assert settings.timeout_for("weakness_analysis") == 60.0
    fake.script(fo.chat_json(GOOD))
    fake.fallback["embeddings"] = fo.embeddings_for(3)

    async def main() -> None:
        client = build_client(settings)
        try:
            # chat and embeddings on one server share one gate
            assert client.chat_gate is client.embed_gate
            await client.complete(REQUEST, CTX)
            await client.embed(["x"], CallContext(kind="embedding"))
        finally:
            await client.aclose()

    asyncio.run(main())
    chat_body, embed_body = (r.body for r in fake.requests)
    assert chat_body["model"] == "local-model"
    assert chat_body["response_format"]["type"] == "json_object"
    assert embed_body["model"] == "bge-m3"


def test_the_mlx_backend_is_chosen_by_settings_and_explains_a_missing_extra() -> None:
    local_embeddings = "http://127.0.0.1:9/v1"  # an MLX chat model still needs one
    with pytest.raises(ConfigError, match="WORKER_MLX_MODEL"):
        build_client(ModelSettings(llm_backend="mlx", embed_base_url=local_embeddings))
    with pytest.raises(ConfigError, match="WORKER_EMBED_API_KEY"):
        build_client(ModelSettings(llm_backend="mlx", mlx_model="mlx-community/tiny"))
    missing = "/nonexistent/mlx-model"
    client = build_client(ModelSettings(llm_backend="mlx", mlx_model=missing,
                                        llm_gate_capacity=1, embed_base_url=local_embeddings))
    assert isinstance(client.chat_backend, MlxChat)
    assert client.chat_gate.name == "mlx" and client.chat_gate.capacity == 1

    async def main() -> None:
        try:
            await client.start()
        finally:
            await client.aclose()

    if importlib.util.find_spec("mlx_lm") is None:
        # this machine cannot run mlx-lm: the error says how to get it
        with pytest.raises(ConfigError, match=r"pg-llm-worker\[mlx\]"):
            asyncio.run(main())
    else:
        # a path that is not there is named, not taken for a Hugging Face repo to download
        with pytest.raises(ConfigError, match="is not a directory"):
            asyncio.run(main())


def test_a_compressed_reply_is_bounded_by_its_decoded_size(fake: fo.FakeOpenAI) -> None:
    """A gzip bomb: 50 MB of reply in about 50 KB on the wire. The limit counts the bytes
    decoded, so the call ends as a server fault before the reply is inflated in memory."""
    bomb = fo.chat("x" * 50_000_000)
    bomb.headers["content-encoding"] = "gzip"
    small = fo.chat(json.dumps({"answer_choice": 2, "explanation_md": "ok",
                                "confidence": "high"}))
    small.headers["content-encoding"] = "gzip"
    fake.script(bomb, small)

    async def main() -> None:
        client = ModelClient(
            chat=OpenAIChat(make_client(fake.base_url, SecretStr(KEY), max_reply_bytes=65_536),
                            "fake-model", "json_schema"),
            chat_gate=Gate("fake-chat", 1), timeout_for=lambda kind: 10.0)
        try:
            with pytest.raises(ModelRetryable) as caught:
                await client.complete(REQUEST, CTX)
            assert caught.value.code == "server_error"
            assert "65536 bytes" in caught.value.message
            result = await client.complete(REQUEST, CTX)  # a compressed reply under it is read
            assert result.value.answer_choice == 2
        finally:
            await client.aclose()

    asyncio.run(main())


def test_a_reply_over_the_size_limit_is_cut_off_as_a_server_fault(fake: fo.FakeOpenAI) -> None:
    """A 100 MB reply took the worker from 69 to 358 MB: the reply is read only up to the
    limit, and the call ends as a retryable server fault naming it."""
    fake.script(fo.chat("x" * 1_000_000), fo.chat(json.dumps(
        {"answer_choice": 2, "explanation_md": "ok", "confidence": "high"})))

    async def main() -> None:
        client = ModelClient(
            chat=OpenAIChat(make_client(fake.base_url, SecretStr(KEY), max_reply_bytes=65_536),
                            "fake-model", "json_schema"),
            chat_gate=Gate("fake-chat", 1), timeout_for=lambda kind: 10.0)
        try:
            with pytest.raises(ModelRetryable) as caught:
                await client.complete(REQUEST, CTX)
            assert caught.value.code == "server_error"
            assert "65536 bytes" in caught.value.message
            assert client.chat_gate.in_use == 0
            result = await client.complete(REQUEST, CTX)  # a reply under the limit is read
            assert result.value.answer_choice == 2
        finally:
            await client.aclose()

    asyncio.run(main())
