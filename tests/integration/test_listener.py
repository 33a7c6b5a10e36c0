"""The LISTEN connection behind a network that silently stops forwarding (a black-hole proxy,
tests/support/proxy.py): the listener notices, drops the connection and listens again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg

from tests.support.proxy import BlackHoleProxy
from worker.listener import CHANNEL, Listener

# how long the tests give the listener to notice a dead connection and listen again
WITHIN = 15.0


class Wakes:
    """The listener's wake callback: records every wake-up, and lets a test await one."""

    def __init__(self) -> None:
        self.kinds: list[str | None] = []
        self._arrived = asyncio.Event()

    def __call__(self, kind: str | None) -> None:
        self.kinds.append(kind)
        self._arrived.set()

    async def first(self, since: int, match: Callable[[str | None], bool]) -> str | None:
        """The first wake-up from index `since` on that matches (bound it with wait_for)."""
        while True:
            for kind in self.kinds[since:]:
                if match(kind):
                    return kind
            self._arrived.clear()
            await self._arrived.wait()


@contextlib.asynccontextmanager
async def _running(listener: Listener) -> AsyncIterator[Listener]:
    task = asyncio.create_task(listener.run())
    try:
        await asyncio.wait_for(listener.listening.wait(), WITHIN)
        yield listener
    finally:
        task.cancel()
        await asyncio.wait({task}, timeout=WITHIN)
    assert task.done(), "the listener did not stop when cancelled"


async def _notify_until_heard(dsn: str, wakes: Wakes, within: float) -> str | None:
    """NOTIFY the channel on the server itself (not through the proxy), with a new payload
    every half second, until the listener hears one of them; returns the payload heard."""
    since = len(wakes.kinds)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        sent = 0
        while (left := deadline - loop.time()) > 0:
            sent += 1
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"after-{sent}"))
            heard = wakes.first(since, lambda kind: kind is not None)
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(heard, min(0.5, left))
    raise AssertionError(f"none of {sent} notifications reached the listener in {within} s")


def _listener(proxy: BlackHoleProxy, wakes: Wakes, **options: Any) -> Listener:
    return Listener(proxy.dsn, wakes, "test:listen", probe_interval=0.5, probe_timeout=1.0,
                    **options)


def test_a_black_holed_listen_connection_is_dropped_and_replaced(dsn: str) -> None:
    """The network stops forwarding on the LISTEN connection but keeps it open: the probe
    gets no answer, the listener drops the connection without hanging and listens on a new
    one, and a notification sent after the black hole reaches it."""
    wakes = Wakes()

    async def main() -> None:
        async with BlackHoleProxy(dsn) as proxy, _running(_listener(proxy, wakes)) as listener:
            old_pid = listener.backend_pid
            assert proxy.black_hole() == 1
            since = len(wakes.kinds)
            heard = await _notify_until_heard(dsn, wakes, WITHIN)
            assert heard is not None and heard.startswith("after-")
            assert listener.listening.is_set() and listener.backend_pid != old_pid
            # every kind was woken after the reconnect: notifications were lost meanwhile
            assert None in wakes.kinds[since:]
            # the dead connection was dropped, not cancelled: psycopg would have sent its
            # cancel request on a connection of its own through the proxy
            assert proxy.accepted == 2

    asyncio.run(main())
