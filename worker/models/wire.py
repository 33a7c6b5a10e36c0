"""The model gate on the wire: for HTTP backends the gate is held while the request is at
the server, not while our client builds it or parses the reply.

A capacity-1 gate keeps the model busy only if the next request goes out the moment the
previous reply is in. Held around the whole SDK call, the gate also covered the SDK turning
messages into a request and the reply into objects, about a millisecond on each side on a
small machine, during which the model sat idle. So ModelClient hands the gate to the HTTP
transport through a context variable, and the transport holds it from just before the
request is sent until the last byte of the response is read, bounded by the round trip's
deadline. Everything else about the gate is unchanged: same capacity, same cross-process
slots, a cancelled call leaves it only once its connection is closed.
"""

from __future__ import annotations

import asyncio
import urllib.request
import weakref
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpx2
from openai import AsyncOpenAI, DefaultAsyncHttpxClient

from worker.models.gate import Gate, TripTiming, timed_hold


@dataclass
class WireHold:
    """What the transport needs for the round trip of the current call."""

    gate: Gate
    deadline: float
    trip: TripTiming
    used: bool = False


HOLD: ContextVar[WireHold | None] = ContextVar("model_wire_hold", default=None)

_gated: weakref.WeakSet[AsyncOpenAI] = weakref.WeakSet()


class GatedTransport(httpx2.AsyncBaseTransport):
    """Holds the current call's gate (HOLD) around the exchange with the server; requests
    made outside a model call (no HOLD) pass straight through."""

    def __init__(self, inner: httpx2.AsyncBaseTransport | None = None) -> None:
        self._inner = inner or httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        hold = HOLD.get()
        if hold is None:
            return await self._inner.handle_async_request(request)
        hold.used = True
        try:
            async with timed_hold(hold.gate, hold.deadline, hold.trip):
                response = await self._inner.handle_async_request(request)
                try:
                    await response.aread()  # the whole reply, inside the gate
                except BaseException:
                    await response.aclose()
                    raise
        except TimeoutError:
            # the SDK turns an httpx timeout into APITimeoutError, mapped to `timeout`
            raise httpx2.ReadTimeout(
                f"no answer within {hold.deadline:g} s", request=request) from None
        # let a call that was waiting at the gate send its request before this one goes on
        # to parse its reply: the model gets its next request sooner
        await asyncio.sleep(0)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def gated_client(**kwargs: Any) -> AsyncOpenAI:
    """An AsyncOpenAI client whose requests go through GatedTransport. With a proxy set in
    the environment httpx sends through a proxy transport of its own instead, so such a
    client is not marked gated and ModelClient holds the gate around the whole call."""
    client = AsyncOpenAI(http_client=DefaultAsyncHttpxClient(transport=GatedTransport()),
                         **kwargs)
    if not urllib.request.getproxies():
        _gated.add(client)
    return client


def is_gated(client: AsyncOpenAI) -> bool:
    return client in _gated
