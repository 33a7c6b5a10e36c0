"""The LISTEN connection behind a network that silently stops forwarding (a black-hole proxy,
tests/support/proxy.py): the listener notices, drops the connection and listens again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest

from tests.support.proxy import BlackHoleProxy
from worker.listener import CHANNEL, KEEPALIVES, Listener

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


def test_a_connect_that_gets_no_answer_is_given_up_and_retried(dsn: str) -> None:
    """While the network passes nothing, the reconnect's own connection gets no answer:
    connect_timeout gives it up and the listener tries again, and listens once the network
    is back."""
    wakes = Wakes()

    async def main() -> None:
        async with BlackHoleProxy(dsn) as proxy, \
                _running(_listener(proxy, wakes, connect_timeout=2)) as listener:
            old_pid = listener.backend_pid
            proxy.forward_new = False
            proxy.black_hole()
            # the probe fails, the reconnect goes into the void (connection 2); only a
            # connect that gives up leads to connection 3
            await asyncio.wait_for(proxy.wait_accepted(3), WITHIN)
            assert not listener.listening.is_set()
            proxy.forward_new = True
            heard = await _notify_until_heard(dsn, wakes, WITHIN)
            assert heard is not None and listener.backend_pid != old_pid

    asyncio.run(main())


def _own_socket(address: tuple[str, int]) -> socket.socket:
    """This process's socket bound to `address` (a duplicate: closing it leaves the original)."""
    for name in os.listdir("/dev/fd"):
        try:
            fd = os.dup(int(name))
        except OSError:  # the descriptor of the listing itself, closed by now
            continue
        try:
            sock = socket.socket(fileno=fd)
        except OSError:  # not a socket
            os.close(fd)
            continue
        if sock.family == socket.AF_INET and sock.getsockname() == address:
            return sock
        sock.close()
    raise AssertionError(f"no socket of this process is bound to {address}")


@pytest.mark.skipif(not hasattr(socket, "TCP_KEEPIDLE"), reason="Linux keepalive options")
def test_the_listen_connection_has_tcp_keepalives(dsn: str) -> None:
    """The kernel probes an idle LISTEN connection too, so a vanished server is noticed even
    where no probe query is under way."""

    async def main() -> None:
        async with BlackHoleProxy(dsn) as proxy, _running(_listener(proxy, Wakes())):
            with _own_socket(proxy.peers[-1]) as sock:
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == \
                    KEEPALIVES["keepalives_idle"]
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == \
                    KEEPALIVES["keepalives_interval"]
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == \
                    KEEPALIVES["keepalives_count"]

    asyncio.run(main())
