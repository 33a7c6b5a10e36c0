"""Waking the idle slots of one kind: one slot per notification, more only when there is more.

A NOTIFY says "jobs of this kind arrived", not how many. Waking every idle slot for it sends
them all to claim at once; for a single job all but one come back empty, and on a small
machine their round trips delay the one that got the job. So a notification wakes one idle
slot, and a slot whose claim came back full wakes the next one (`wake_one` again) before it
runs its jobs: a burst fans out over the slots as fast as it fills their batches. A wake-up
that finds no idle slot is owed to the next slot that would go idle, so a notification that
arrives while every slot is busy is never lost. Stopping wakes them all.
"""

from __future__ import annotations

import asyncio
import collections
import random


class SlotWaker:
    def __init__(self, poll_interval: float) -> None:
        self._poll_interval = poll_interval
        self._idle: collections.deque[asyncio.Future[None]] = collections.deque()
        self._owed = False
        self._timer: asyncio.TimerHandle | None = None

    def wake_one(self) -> None:
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._owed = True

    def wake_all(self) -> None:
        self._owed = True
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def wake_in(self, delay: float) -> None:
        """Wake one slot in `delay` seconds (a scheduled job or a retry falls due), unless
        the poll or an earlier wake-up comes first: the claim that wakes then and finds
        nothing due yet asks for the next due time again (Executor.run_once)."""
        if delay >= self._poll_interval:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        timer = self._timer
        if timer is not None and not timer.cancelled() and timer.when() > now:
            if timer.when() <= now + delay:
                return
            timer.cancel()
        self._timer = loop.call_at(now + delay, self.wake_one)

    def claiming(self) -> None:
        """A slot is about to claim: the claim sees every job committed before it, so what
        was owed so far is paid by it."""
        self._owed = False

    async def wait(self) -> None:
        """Until woken, or until the poll is due; the poll's jitter keeps many slots and
        workers from polling in lockstep."""
        if self._owed:
            self._owed = False
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle.append(waiter)
        try:
            async with asyncio.timeout(self._poll_interval * random.uniform(0.8, 1.2)):
                await waiter
        except TimeoutError:
            pass
        finally:
            if not waiter.done():
                waiter.cancel()  # skipped (and dropped) by the next wake_one
