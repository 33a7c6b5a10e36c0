"""The claim connection: a job's savepoint is opened only when its handler talks to the server.

Every job runs inside a savepoint of the claiming transaction, so a failing job rolls back
its own writes and nothing else. Most of a savepoint's cost is its round trip, and a handler
that never uses the connection has nothing to roll back. So the executor *arms* the savepoint
before the handler and the connection opens it right before the handler's first exchange with
the server, whatever that is (a query, a COPY, a nested transaction, a pipeline): every one of
them goes through `AsyncConnection.wait`. A handler that never touches the connection costs no
round trip; one that does gets exactly the savepoint it always had, first.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.abc import PQGen

from worker.queries import q


class ClaimConnection(psycopg.AsyncConnection[dict[str, Any]]):
    """The pool's connection class for claims; see the module docstring."""

    _armed = False
    _opened = False

    def arm_savepoint(self) -> None:
        """The next exchange with the server opens the job's savepoint first."""
        self._armed, self._opened = True, False

    def disarm(self) -> None:
        """Forget the job's savepoint (the claim is being abandoned and rolled back)."""
        self._armed = self._opened = False

    async def close_savepoint(self, *, rollback: bool) -> None:
        """End the job's savepoint: release it, or roll back to it and release it.
        Nothing is sent when the handler never used the connection. If this fails, the
        savepoint still counts as open, so a rollback to it can follow."""
        self._armed = False
        if not self._opened:
            return
        async with self.lock:
            if rollback:
                await self.wait(self._exec_command(q("job_savepoint_rollback")))
            await self.wait(self._exec_command(q("job_savepoint_release")))
        self._opened = False

    async def wait(self, gen: PQGen[Any], *args: Any, **kwargs: Any) -> Any:
        if self._armed:
            # flag first: from here on the savepoint may exist, and must be rolled back to
            self._armed, self._opened = False, True
            await super().wait(self._exec_command(q("job_savepoint")))
        return await super().wait(gen, *args, **kwargs)
