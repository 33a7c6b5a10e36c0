"""A server's x-ratelimit-* headers hold the fleet: a reply that says no request is left
blocks the endpoint in queue.rate_limiters until its reset, so the next request of another
client (its own connection, as another worker process has) waits for it. Garbage headers
change nothing. The real `openai` client talks to the fake server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from tests.integration.test_model_openai import CTX, GOOD, REQUEST, failure
from tests.support import fake_openai as fo
from tests.support.db import sql
from worker.models.accounting import Accountant
from worker.models.client import ModelClient
from worker.models.errors import ModelSnoozed
from worker.models.gate import Gate
from worker.models.openai_backend import OpenAIChat, make_client
from worker.models.ratelimit import RateLimit

KEY = "fake-endpoint fake-model"
# generous: only the server's headers hold anything in these tests
LIMIT = RateLimit(KEY, window=60.0, requests=1000)
RESET = 2.0


@pytest.fixture
def fake() -> Iterator[fo.FakeOpenAI]:
    with fo.FakeOpenAI() as server:
        yield server


def _client(base_url: str, dsn: str) -> ModelClient:
    """One worker process's client: its own gate and its own accounting connection."""
    return ModelClient(
        chat=OpenAIChat(make_client(base_url, SecretStr("sk-test")), "fake-model"),
        chat_gate=Gate("fake-chat", 1), accountant=Accountant(dsn),
        timeout_for=lambda kind: 10.0, chat_limit=LIMIT, rate_limit_max_wait=30.0)


def _with_headers(**headers: str) -> fo.Reply:
    reply = fo.chat_json(GOOD)
    reply.headers = {f"x-ratelimit-{k.replace('_', '-')}": v for k, v in headers.items()}
    return reply


def _one_each(fake: fo.FakeOpenAI, dsn: str) -> None:
    """Client A's call, then client B's."""
    async def main() -> None:
        first, second = _client(fake.base_url, dsn), _client(fake.base_url, dsn)
        try:
            await first.complete(REQUEST, CTX)
            await second.complete(REQUEST, CTX)
        finally:
            await first.aclose()
            await second.aclose()

    asyncio.run(main())


def _blocked_for(dsn: str) -> list[object]:
    return [r["blocked"] for r in sql(
        dsn, "SELECT blocked_until > clock_timestamp() AS blocked FROM queue.rate_limiters "
             "WHERE key = %s", (KEY,))]


def test_no_remaining_requests_hold_the_next_client_until_the_reset(
        dsn: str, fake: fo.FakeOpenAI) -> None:
    fake.script(_with_headers(limit_requests="500", remaining_requests="0",
                              reset_requests=f"{RESET:g}s", remaining_tokens="90000",
                              reset_tokens="20ms"),
                fo.chat_json(GOOD))
    _one_each(fake, dsn)
    first, second = fake.requests
    assert first.ended is not None
    # a lower bound only: the hold starts when the reply is in, after the server's stamp
    assert second.started - first.ended >= RESET * 0.9, second.started - first.ended


@pytest.mark.parametrize("headers", [
    {"remaining_requests": "0", "reset_requests": "soon"},
    {"remaining_requests": "0", "reset_requests": "-2s"},
    {"remaining_requests": "0", "reset_requests": "nan"},
    {"remaining_requests": "-1", "reset_requests": "2s"},
    {"remaining_requests": "lots", "reset_requests": "2s", "remaining_tokens": "\x7f"},
    {"remaining_tokens": "0", "reset_tokens": "1e999s"},
])
def test_garbage_headers_change_nothing(dsn: str, fake: fo.FakeOpenAI,
                                        headers: dict[str, str]) -> None:
    fake.script(_with_headers(**headers), fo.chat_json(GOOD))
    _one_each(fake, dsn)
    assert len(fake.requests) == 2 and all(r.status == 200 for r in fake.requests)
    assert True not in _blocked_for(dsn)


def test_a_429_without_retry_after_snoozes_until_the_headers_reset(fake: fo.FakeOpenAI) -> None:
    refused = fo.rate_limited(retry_after=None)
    refused.headers.update({"x-ratelimit-remaining-requests": "0",
                            "x-ratelimit-reset-requests": "1m30s"})
    fake.script(refused)
    exc = failure(fake)
    assert isinstance(exc, ModelSnoozed) and exc.delay == 90.0
