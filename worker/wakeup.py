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


class SlotWaker:
    def __init__(self) -> None:
        self._idle: collections.deque[asyncio.Future[None]] = collections.deque()
        self._owed = False

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

    def claiming(self) -> None:
        """A slot is about to claim: the claim sees every job committed before it, so what
        was owed so far is paid by it."""
        self._owed = False

    async def wait(self, seconds: float) -> None:
        """Until woken, or for `seconds` (the poll)."""
        if self._owed:
            self._owed = False
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle.append(waiter)
        try:
            async with asyncio.timeout(seconds):
                await waiter
        except TimeoutError:
            pass
        finally:
            if not waiter.done():
                waiter.cancel()  # skipped (and dropped) by the next wake_one
