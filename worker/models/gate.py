"""Model gates: at most `capacity` calls inside one model endpoint at once, shared by every
job kind that uses it, and optionally across worker processes through advisory locks.

A holder leaves the gate only when its body has unwound, i.e. when the model call stopped.
Each round trip passes its gate through a RoundTrip, which the backend holds while the model
works on the request (see ModelClient).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

import structlog

from worker.errors import ConfigError
from worker.pgsession import Session

log = structlog.get_logger("worker.models.gate")


@dataclass(frozen=True)
class Ticket:
    """One pass through a gate: how long it waited, and which cross-process slot it holds."""

    wait_ms: float
    slot: int | None = None


class Gate:
    """An in-process gate: an asyncio semaphore that knows how many permits are in use."""

    def __init__(self, name: str, capacity: int) -> None:
        if capacity < 1:
            raise ConfigError(f"gate {name!r}: capacity must be at least 1, not {capacity}")
        self.name = name
        self.capacity = capacity
        self._sem = asyncio.Semaphore(capacity)
        self._in_use = 0

    @property
    def in_use(self) -> int:
        return self._in_use

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[Ticket]:
        started = time.monotonic()
        async with self._sem:
            self._in_use += 1
            try:
                async with self._cross_process() as slot:
                    yield Ticket(round((time.monotonic() - started) * 1000, 3), slot)
            finally:
                self._in_use -= 1

    @contextlib.asynccontextmanager
    async def _cross_process(self) -> AsyncIterator[int | None]:
        yield None

    async def aclose(self) -> None:
        """Nothing to close for an in-process gate."""


@dataclass
class RoundTrip:
    """One model round trip's pass through its gate. The backend enters hold() around the
    time the model works on the request; the wait and the time inside are kept for the
    call's record, and `held` lets the caller check that the gate was passed at all."""

    gate: Gate
    deadline: float
    # awaited once inside the gate, right before the request: the endpoint's rate limit
    pace: Callable[[], Awaitable[None]] | None = None
    wait_ms: float = 0.0
    latency_ms: float = 0.0
    held: bool = False
    # the reply's HTTP headers, where the backend speaks HTTP (its x-ratelimit-*)
    headers: Mapping[str, str] | None = None

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Inside the gate, bounded by `deadline` seconds from entry (TimeoutError on expiry,
        once the body has unwound); the gate is released only after the body stopped."""
        self.held = True
        async with self.gate.hold() as ticket:
            paced = time.monotonic()
            if self.pace is not None:
                await self.pace()
            self.wait_ms = ticket.wait_ms + (time.monotonic() - paced) * 1000
            started = time.monotonic()
            try:
                async with asyncio.timeout(self.deadline):
                    yield
            finally:
                self.latency_ms = (time.monotonic() - started) * 1000


def lock_class(name: str) -> int:
    """A stable signed 32-bit key for the gate's name (the first half of a two-key lock)."""
    digest = hashlib.blake2b(name.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


class AdvisoryGate(Gate):
    """A gate that also holds one of `capacity` PostgreSQL advisory locks while inside.

    Each holder polls pg_try_advisory_lock(class, slot) on a session of its own, so a
    crashed process frees its slot with its connection. Polling, not a blocking lock,
    keeps a cancelled waiter from leaving a lock request queued on the server.
    """

    def __init__(
        self, name: str, capacity: int, dsn: str, *, poll_interval: float = 0.05
    ) -> None:
        super().__init__(name, capacity)
        self._dsn = dsn
        self._class = lock_class(name)
        self._poll = poll_interval
        self._idle: list[Session] = []
        self._closing: set[asyncio.Task[None]] = set()
        self._released_at = -math.inf

    def _session(self) -> Session:
        if self._idle:
            return self._idle.pop()
        return Session(self._dsn, f"worker-gate:{self.name}"[:63])

    async def _try_slots(self, session: Session) -> int | None:
        # a session holds no lock while it polls, so reconnecting it then is harmless
        for slot in random.sample(range(self.capacity), self.capacity):
            rows = await session.run("gate_try_lock", {"class": self._class, "slot": slot})
            if rows and rows[0]["locked"]:
                return slot
        return None

    @contextlib.asynccontextmanager
    async def _cross_process(self) -> AsyncIterator[int | None]:
        # fairness: try-locks have no queue, so a busy process that re-locks the moment it
        # unlocks would starve the others; after a release it waits out one polling gap
        # (pollers try at least every 1.5 intervals), giving a waiting process its turn
        courtesy = self._released_at + 1.5 * self._poll - time.monotonic()
        if courtesy > 0:
            await asyncio.sleep(courtesy)
        session = self._session()
        try:
            slot = await self._try_slots(session)
            while slot is None:
                # jitter keeps processes from polling in lockstep
                await asyncio.sleep(self._poll * random.uniform(0.5, 1.5))
                slot = await self._try_slots(session)
        except BaseException:
            # a try-lock cut short may still have taken its slot: closing frees it
            await session.aclose()
            raise
        try:
            yield slot
        finally:
            await self._unlock(session, slot)

    async def _unlock(self, session: Session, slot: int) -> None:
        task = asyncio.ensure_future(
            session.run("gate_unlock", {"class": self._class, "slot": slot})
        )
        try:
            rows = await asyncio.shield(task)
        except asyncio.CancelledError:
            # cancelled again while unlocking: the unlock goes on, and the session is closed
            # once it is done, so the slot cannot stay locked
            task.add_done_callback(lambda _: self._close_soon(session))
            raise
        except Exception:
            # whatever failed, closing the session makes the server free every lock it held
            log.warning("gate_unlock_failed", gate=self.name, slot=slot)
            await session.aclose()
            return
        finally:
            self._released_at = time.monotonic()
        if not rows[0]["unlocked"]:
            # the session was lost while inside (the unlock ran on its replacement), and the
            # server freed the slot with it: another holder may have been let in meanwhile
            log.warning("gate_slot_lost", gate=self.name, slot=slot)
        self._idle.append(session)

    def _close_soon(self, session: Session) -> None:
        task = asyncio.get_running_loop().create_task(session.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        while self._idle:
            await self._idle.pop().aclose()


class Gates:
    """The gates of one worker process, by endpoint name; asking twice gives the same gate."""

    def __init__(self, dsn: str | None = None) -> None:
        self._dsn = dsn
        self._gates: dict[str, Gate] = {}

    def get(self, name: str, capacity: int, *, cross_process: bool = False) -> Gate:
        gate = self._gates.get(name)
        if gate is not None:
            if gate.capacity != capacity or isinstance(gate, AdvisoryGate) != cross_process:
                raise ConfigError(
                    f"gate {name!r} is configured twice with different settings "
                    f"(capacity {gate.capacity} vs {capacity})"
                )
            return gate
        if cross_process:
            if self._dsn is None:
                raise ConfigError(f"gate {name!r}: a cross-process gate needs a database")
            gate = AdvisoryGate(name, capacity, self._dsn)
        else:
            gate = Gate(name, capacity)
        self._gates[name] = gate
        return gate

    async def aclose(self) -> None:
        for gate in self._gates.values():
            await gate.aclose()
