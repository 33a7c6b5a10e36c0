"""The LISTEN connection: turns NOTIFY on `queue_jobs` into wake-ups, and survives reconnects.

After every (re)connect it wakes every kind, since notifications sent while it was away are lost.

A connection can also die without a word: when a NAT, firewall or proxy on the way drops its
state, the socket stays open, writes succeed and no answer ever comes. So every round trip on
the connection has a deadline (an idle connection is probed with one every `probe_interval`),
connecting has one too, and the kernel sends TCP keepalives.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from typing import Any

import psycopg
import structlog

from worker import metrics
from worker.db import aconnect
from worker.queries import q

log = structlog.get_logger("worker.listener")

CHANNEL = "queue_jobs"
# libpq's TCP keepalives: after 30 s of silence the kernel probes every 10 s and gives the
# connection up after 3 unanswered probes; they also keep a NAT's state for it alive
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
              "keepalives_count": 3}


class Listener:
    def __init__(
        self,
        dsn: str,
        wake: Callable[[str | None], None],
        application_name: str,
        connect_kwargs: dict[str, Any] | None = None,
        *,
        probe_interval: float = 15.0,
        probe_timeout: float = 10.0,
        connect_timeout: int = 10,
    ) -> None:
        self._dsn = dsn
        self._wake = wake
        self._application_name = application_name
        self._connect_kwargs = {**KEEPALIVES, "connect_timeout": connect_timeout,
                                **(connect_kwargs or {})}
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self.listening = asyncio.Event()
        self.backend_pid: int | None = None

    async def run(self) -> None:
        delay = 0.1
        while True:
            try:
                conn = await aconnect(
                    self._dsn, autocommit=True, application_name=self._application_name,
                    **self._connect_kwargs,
                )
            except psycopg.OperationalError as exc:
                log.warning("listen_connect_failed", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            try:
                async with conn:
                    await self._round_trip(conn, "listen")
                    self.backend_pid = conn.info.backend_pid
                    self.listening.set()
                    delay = 0.1
                    log.info("listening", channel=CHANNEL, backend_pid=self.backend_pid)
                    self._wake(None)
                    await self._consume(conn)
            except psycopg.OperationalError as exc:
                self.listening.clear()
                metrics.listener_reconnecting()
                log.warning("listen_connection_lost", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _consume(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            async for notify in conn.notifies(timeout=self._probe_interval):
                self._wake(notify.payload or None)
            await self._round_trip(conn, "ping")

    async def _round_trip(self, conn: psycopg.AsyncConnection[Any], query: str) -> None:
        """Run the named query; a connection that gives no answer within probe_timeout is
        dropped (OperationalError)."""
        # A task of its own, shielded from the timeout: cancelling a query makes psycopg send
        # a cancel request on a new connection and wait up to 5 s for it, then up to 5 s more
        # for the query to end, before it gives the connection up.
        sent = asyncio.create_task(conn.execute(q(query)))
        try:
            await asyncio.wait_for(asyncio.shield(sent), self._probe_timeout)
        except TimeoutError:
            log.warning("listen_probe_timeout", query=query, timeout_s=self._probe_timeout,
                        backend_pid=conn.info.backend_pid)
            raise psycopg.OperationalError(
                f"no answer to {query!r} within {self._probe_timeout} s") from None
        finally:
            if not sent.done():  # timed out, or the listener itself is being cancelled
                _shut_down(conn)
                # the query fails at once now: libpq reads end of stream, drops the connection
                await asyncio.wait({sent}, timeout=self._probe_timeout)
                sent.cancel()  # a no-op unless the shutdown did not end it


def _shut_down(conn: psycopg.AsyncConnection[Any]) -> None:
    """Shut the connection's socket down both ways without closing its descriptor, which
    psycopg owns and is waiting on; a socket already disconnected is left as it is."""
    # a duplicate descriptor: closing it leaves psycopg's one open
    with socket.socket(fileno=os.dup(conn.fileno())) as sock, contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
