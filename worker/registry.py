"""Job kinds and the registry that maps a kind name to its handler and its limits.

A kind supplies a handler; the shared pipeline (claim → execute → finish) does the rest.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from typing import Any, Protocol

from psycopg import AsyncCursor, AsyncPipeline, AsyncTransaction, ConnectionInfo
from psycopg.abc import Params, QueryNoTemplate
from pydantic import BaseModel

from worker.errors import ConfigError
from worker.job import Job, Outcome


class JobConnection(Protocol):
    """The claiming transaction's connection as a handler sees it: statements, nested
    transactions (savepoints) and pipelines, but no commit, rollback or close. The claim's
    end is the executor's: every job's writes commit with its outcome, or not at all."""

    @property
    def info(self) -> ConnectionInfo: ...

    @property
    def closed(self) -> bool: ...

    @property
    def broken(self) -> bool: ...

    async def execute(
        self, query: QueryNoTemplate, params: Params | None = None, *,
        prepare: bool | None = None, binary: bool = False,
    ) -> AsyncCursor[dict[str, Any]]: ...

    def transaction(
        self, savepoint_name: str | None = None, force_rollback: bool = False
    ) -> AbstractAsyncContextManager[AsyncTransaction]: ...

    def pipeline(self) -> AbstractAsyncContextManager[AsyncPipeline]: ...


# A handler gets the claiming transaction's connection and the claimed job. It returns the
# job's result (stored in queue.jobs.result) or raises a worker.errors.JobError.
Handler = Callable[[JobConnection, Job], Awaitable[dict[str, Any] | None]]
# A batch handler gets every job of the claim at once and returns, per job id, the job's
# result or the exception it ended with (for one model call serving many jobs).
BatchHandler = Callable[
    [JobConnection, list[Job]], Awaitable[dict[int, dict[str, Any] | BaseException | None]]
]
# Called in the claiming transaction when a job ends failed or skipped, so the kind can mark
# its domain row (e.g. a question's explanation status) in the same commit.
FailureHook = Callable[[JobConnection, Job, Outcome], Awaitable[None]]


@dataclass(frozen=True)
class JobKind:
    name: str
    handler: Handler | None = None
    batch_handler: BatchHandler | None = None
    on_final_failure: FailureHook | None = None
    # the payload's shape: the executor validates every claimed payload against it once, and
    # a payload that does not fit ends `bad_payload` (final) before any handler sees it
    payload_model: type[BaseModel] | None = None
    # jobs claimed per transaction; they run one after another, each in its own savepoint
    batch_size: int = 1
    # claiming transactions of this kind that may be open at once in one worker
    concurrency: int = 1
    # seconds one job may run before it is stopped and retried
    timeout: float = 60.0


class Registry:
    def __init__(self) -> None:
        self._kinds: dict[str, JobKind] = {}

    def register(self, kind: JobKind) -> JobKind:
        if kind.name in self._kinds:
            raise ConfigError(f"job kind {kind.name!r} is registered twice")
        if (kind.handler is None) == (kind.batch_handler is None):
            raise ConfigError(f"job kind {kind.name!r} needs exactly one of handler, batch_handler")
        if kind.batch_size < 1 or kind.concurrency < 1 or kind.timeout <= 0:
            raise ConfigError(f"job kind {kind.name!r}: batch_size, concurrency, timeout > 0")
        self._kinds[kind.name] = kind
        return kind

    def names(self) -> list[str]:
        return sorted(self._kinds)

    def kinds(self) -> list[JobKind]:
        return [self._kinds[name] for name in self.names()]

    def configured(
        self, concurrency: dict[str, int], batch_size: dict[str, int]
    ) -> list[JobKind]:
        """The kinds with per-kind overrides from the settings applied."""
        unknown = (set(concurrency) | set(batch_size)) - set(self._kinds)
        if unknown:
            raise ConfigError(f"settings name unknown job kinds: {', '.join(sorted(unknown))}")
        return [
            replace(
                kind,
                concurrency=concurrency.get(kind.name, kind.concurrency),
                batch_size=batch_size.get(kind.name, kind.batch_size),
            )
            for kind in self.kinds()
        ]


def load_plugins(modules: list[str], registry: Registry) -> None:
    """Import each plugin module and let it add its kinds: `register(registry)`."""
    for module in modules:
        try:
            imported = importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"cannot import plugin module {module!r}: {exc}") from exc
        register = getattr(imported, "register", None)
        if not callable(register):
            raise ConfigError(f"plugin module {module!r} has no register(registry) function")
        register(registry)
