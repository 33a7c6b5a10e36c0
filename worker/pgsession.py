"""One autocommit connection for a helper beside the claims (attempt bookkeeping, model
accounting, the metrics gauges, a gate's advisory locks): opened on first use, reopened when lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import psycopg

from worker.db import aconnect
from worker.dberrors import connection_lost
from worker.queries import q


class Session:
    """Runs named queries, one at a time, on one autocommit connection.

    A query that finds the connection lost (the server restarted, the network cut it) runs
    once more on a new one. Any other error, a deadlock or a timeout on a healthy connection
    included, is the caller's, and so is a connection that cannot be opened. `setup` names a
    query run on every new connection before it is used.
    """

    def __init__(
        self, dsn: str, application_name: str, *, options: str = "", setup: str | None = None
    ) -> None:
        self._dsn = dsn
        self._application_name = application_name  # what operators see in pg_stat_activity
        self._options = options
        self._setup = setup
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def run(self, name: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """The rows of query `name`; none for a statement that returns none."""
        async with self._lock:
            try:
                return await self._execute(name, params)
            except psycopg.Error as exc:
                if self._conn is None or not connection_lost(self._conn, exc):
                    raise
            return await self._execute(name, params)

    async def _execute(self, name: str, params: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        conn = await self._connection()
        cur = await conn.execute(q(name), params)
        return await cur.fetchall() if cur.description else []

    async def _connection(self) -> psycopg.AsyncConnection[dict[str, Any]]:
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            await self.aclose()
        if self._conn is None:
            self._conn = await self._open(self._setup)
        return self._conn

    async def _open(self, setup: str | None) -> psycopg.AsyncConnection[dict[str, Any]]:
        conn = await aconnect(self._dsn, autocommit=True, options=self._options,
                              application_name=self._application_name)
        try:
            if setup is not None:
                await conn.execute(q(setup))
        except BaseException:
            await conn.close()
            raise
        return conn

    async def aclose(self) -> None:
        """Close the connection; the next query opens a new one. Closing frees whatever the
        session held on the server (its advisory locks)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
