"""Assembling a worker as `python -m worker run` does: settings, model client, kinds."""

from __future__ import annotations

import asyncio

import pytest

from tests.support import fake_openai as fake
from tests.support.vectors import DIM, responder
from worker.config import Settings
from worker.runner import assembled_worker


def test_one_process_can_assemble_a_worker_twice(dsn: str, monkeypatch: pytest.MonkeyPatch
                                                 ) -> None:
    """Each assembly gets a registry of its own: the built-in kinds and the plugins' kinds
    are registered again, never "registered twice" (a test runner, an embedding app)."""
    with fake.FakeOpenAI() as server:
        server.fallback["embeddings"] = responder()
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        monkeypatch.setenv("WORKER_EMBED_DIM", str(DIM))
        settings = Settings(database_url=dsn, plugins=["tests.support.kinds"])

        async def main() -> list[set[str]]:
            built = []
            for _ in range(2):
                async with assembled_worker(settings, dsn) as worker:
                    built.append({kind.name for kind in worker.kinds})
            return built

        first, second = asyncio.run(main())
    assert first == second
    assert {"embedding", "explanation", "weakness_analysis", "test.effect"} <= first
