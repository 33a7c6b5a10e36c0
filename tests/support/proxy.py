"""A loopback TCP proxy in front of the test server that can black-hole its connections.

A black-holed connection keeps both of its sockets open but no byte gets through any more:
what arrives from either side is read and thrown away. That is what a client sees when a
NAT, firewall or proxy on the way silently drops a connection's state: writes succeed, no
answer ever comes, and nothing tells the client the connection is gone (the proxy's own
kernel still acknowledges every packet, so TCP keepalives cannot notice it either).

The proxy runs on the test's event loop; start and stop it with `async with`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from types import TracebackType
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

_CHUNK = 65536


class _Link:
    """One client connection and, unless it was black-holed from the start, its upstream."""

    def __init__(self, client: asyncio.StreamWriter, black_holed: bool) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.black_holed = black_holed
        self.peer: tuple[str, int] = client.get_extra_info("peername")

    def close(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.close()


class BlackHoleProxy:
    """Forwards connections on 127.0.0.1 to the server of `dsn`.

    `black_hole()` stops forwarding on the connections open now; `forward_new = False` makes
    new connections black holes from the start (a network that passes nothing at all).
    """

    def __init__(self, dsn: str) -> None:
        params = conninfo_to_dict(dsn)
        self._dsn = dsn
        self._host = str(params.get("host") or "localhost")
        self._port = int(params.get("port") or 5432)
        self._server: asyncio.Server | None = None
        self._links: list[_Link] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Condition()
        self.forward_new = True
        self.accepted = 0

    async def __aenter__(self) -> BlackHoleProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._server is not None
        self._server.close()
        for link in self._links:
            link.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def dsn(self) -> str:
        """The test server's DSN, pointed at the proxy."""
        params = conninfo_to_dict(self._dsn)
        params.pop("hostaddr", None)
        return make_conninfo("", **{**params, "host": "127.0.0.1", "port": str(self.port)})

    @property
    def peers(self) -> list[tuple[str, int]]:
        """The client-side address of every connection accepted so far, oldest first."""
        return [link.peer for link in self._links]

    def black_hole(self) -> int:
        """Stop forwarding on every connection open now; returns how many there were."""
        opened = [link for link in self._links if not link.black_holed]
        for link in opened:
            link.black_holed = True
        return len(opened)

    async def wait_accepted(self, count: int) -> None:
        """Until `count` connections in all have been accepted (bound it with wait_for)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.accepted >= count)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(writer, black_holed=not self.forward_new)
        self._links.append(link)
        # the handler's task is not ours to cancel; the link's pumps get tasks of their own
        self._spawn(self._serve(link, reader))
        async with self._changed:
            self.accepted += 1
            self._changed.notify_all()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, link: _Link, client: asyncio.StreamReader) -> None:
        if link.black_holed:
            await self._pump(link, client, None)
            return
        try:
            if self._host.startswith("/"):  # a socket directory, as libpq reads it
                path = f"{self._host}/.s.PGSQL.{self._port}"
                upstream, link.upstream = await asyncio.open_unix_connection(path)
            else:
                upstream, link.upstream = await asyncio.open_connection(self._host, self._port)
        except OSError:
            link.close()
            return
        self._spawn(self._pump(link, upstream, link.client))
        await self._pump(link, client, link.upstream)

    async def _pump(self, link: _Link, src: asyncio.StreamReader,
                    dst: asyncio.StreamWriter | None) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(_CHUNK):
                if dst is not None and not link.black_holed:
                    dst.write(data)
                    await dst.drain()
        # a black hole passes on no end of stream either: the other side never hears of it
        if not link.black_holed:
            link.close()
