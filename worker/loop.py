"""The worker: slots that claim and run jobs, woken by NOTIFY and by a periodic poll.

Stops on SIGTERM/SIGINT: no new claims, in-flight jobs get a grace period, the rest are
rolled back without using up their attempt; a second signal stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from collections.abc import Callable
from typing import Any

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

from worker import metrics
from worker.attempts import Bookkeeper
from worker.config import Settings
from worker.db import register_vector_types
from worker.errors import ConfigError, OwnershipLost
from worker.executor import Conn, Executor
from worker.listener import Listener
from worker.registry import JobKind, Registry
from worker.savepoints import ClaimConnection
from worker.systemd import notify, watchdog, watchdog_interval
from worker.wakeup import SlotWaker

log = structlog.get_logger("worker.loop")


def session_options(settings: Settings) -> str:
    """Server-side backstops for every worker session: a hung statement or a transaction
    left idle by a wedged worker is ended by the server, which frees the claimed jobs."""
    return (
        f"-c statement_timeout={settings.statement_timeout_ms} "
        f"-c idle_in_transaction_session_timeout={settings.idle_in_tx_timeout_ms}"
    )


def claim_options(settings: Settings) -> str:
    """A claim's session also bounds its lock waits: a row the application holds costs the
    job that writes it `lock_timeout`, not the statement timeout, and not its batch-mates."""
    return f"{session_options(settings)} -c lock_timeout={settings.lock_timeout_ms}"


def checked_timeouts(settings: Settings, kinds: list[JobKind]) -> Settings:
    """The settings with the idle-in-transaction backstop resolved; settings that
    contradict each other are refused before anything runs."""
    longest_ms = max((kind.timeout * 1000 for kind in kinds), default=0.0)
    idle_ms = settings.idle_in_tx_timeout_ms
    if idle_ms is None:
        idle_ms = max(300_000, int(longest_ms) + 60_000)
    elif idle_ms and longest_ms >= idle_ms:
        # the server would end the claim mid-job: the model is paid for, the job redone
        kind = max(kinds, key=lambda k: k.timeout)
        raise ConfigError(
            f"job kind {kind.name!r} may run {kind.timeout:g} s, but "
            f"WORKER_IDLE_IN_TX_TIMEOUT_MS={idle_ms} ends a claim idle that long; "
            "raise WORKER_IDLE_IN_TX_TIMEOUT_MS above the longest job timeout (or unset it)")
    statement_ms, lock_ms = settings.statement_timeout_ms, settings.lock_timeout_ms
    if statement_ms and lock_ms >= statement_ms:
        raise ConfigError(
            f"WORKER_LOCK_TIMEOUT_MS={lock_ms} must be below WORKER_STATEMENT_TIMEOUT_MS="
            f"{statement_ms}, so a row lock held by the application fails one job's write "
            "instead of timing out the statement")
    return settings.model_copy(update={"idle_in_tx_timeout_ms": idle_ms})


class Worker:
    def __init__(self, settings: Settings, dsn: str, registry: Registry) -> None:
        self.dsn = dsn
        self.kinds: list[JobKind] = registry.configured(settings.concurrency, settings.batch_size)
        self.settings = checked_timeouts(settings, self.kinds)
        self._wake: dict[str, SlotWaker] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._stopping = asyncio.Event()
        self._hard_stop = asyncio.Event()
        self.ready = asyncio.Event()
        self.listener: Listener | None = None

    # -- wake-ups ---------------------------------------------------------------------------

    def wake(self, kind: str | None) -> None:
        """A NOTIFY for `kind` (or for every kind, when None) arrived: one idle slot of the
        kind claims, and wakes the next only if its claim comes back full (wakeup.py)."""
        if kind is None:
            for waker in self._wake.values():
                waker.wake_one()
        elif kind in self._wake:
            self._wake[kind].wake_one()

    def wake_later(self, kind: str, delay: float) -> None:
        """Wake a slot of `kind` in `delay` seconds (a scheduled job or a retry falls due),
        unless the poll or an earlier wake-up of the kind comes first: the claim that wakes
        then finds nothing due yet looks up the next due time again (Executor.run_once)."""
        if delay >= self.settings.poll_interval or kind not in self._wake:
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        pending = self._timers.get(kind)
        if pending is not None and not pending.cancelled() and pending.when() <= when:
            return
        self._timers[kind] = loop.call_at(when, self._wake[kind].wake_one)

    async def _idle(self, waker: SlotWaker) -> None:
        # jitter keeps many slots and workers from polling in lockstep
        await waker.wait(self.settings.poll_interval * random.uniform(0.8, 1.2))

    # -- life cycle -------------------------------------------------------------------------

    def stop(self) -> None:
        if self._stopping.is_set():
            log.warning("second_stop_signal", action="stopping at once")
            self._hard_stop.set()
        else:
            log.info("stop_requested", grace_s=self.settings.shutdown_grace)
        self._stopping.set()
        for waker in self._wake.values():
            waker.wake_all()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def run(self, on_ready: Callable[[], None] | None = None) -> None:
        settings = self.settings
        app_name = f"worker:{settings.worker_id}"
        options = session_options(settings)
        slots_total = sum(kind.concurrency for kind in self.kinds)
        self._wake = {kind.name: SlotWaker() for kind in self.kinds}
        if not self.kinds:
            log.warning("no_job_kinds", hint="set WORKER_PLUGINS or install job kinds")

        async def configure(conn: Conn) -> None:
            conn.prepare_threshold = 0  # the same few queries run all day
            await register_vector_types(conn)

        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self.dsn,
            connection_class=ClaimConnection,
            min_size=max(slots_total, 1),
            max_size=max(slots_total, 1),
            kwargs={"application_name": app_name, "options": claim_options(settings),
                    "row_factory": psycopg.rows.dict_row},
            configure=configure,
            open=False,
            name="worker",
        )
        bookkeeper = Bookkeeper(self.dsn, f"{app_name}:attempts", options)
        self.listener = Listener(self.dsn, self.wake, f"{app_name}:listen")
        await pool.open(wait=True, timeout=30)
        listen_task = asyncio.create_task(self.listener.run(), name="listener")
        slots: list[asyncio.Task[None]] = []
        helpers: list[asyncio.Task[None]] = []
        try:
            await asyncio.wait_for(self.listener.listening.wait(), 30)
            await bookkeeper.register(settings.worker_id, [kind.name for kind in self.kinds])
            helpers.append(asyncio.create_task(self._heartbeat(bookkeeper), name="heartbeat"))
            executor = Executor(pool, bookkeeper, settings.worker_id, settings.retry_base,
                                settings.retry_cap, self._stopping.is_set, self.wake_later,
                                self.wake)
            slots = [
                asyncio.create_task(self._slot(executor, kind), name=f"slot:{kind.name}:{i}")
                for kind in self.kinds
                for i in range(kind.concurrency)
            ]
            log.info("worker_ready", worker_id=settings.worker_id,
                     kinds={k.name: {"concurrency": k.concurrency, "batch_size": k.batch_size}
                            for k in self.kinds})
            self.ready.set()
            if settings.metrics_port:
                metrics.serve(settings.metrics_port)
                helpers.append(asyncio.create_task(
                    metrics.refresh_queue_depth(self.dsn, options), name="metrics"))
            notify("READY=1", f"STATUS=working: {len(slots)} slots over {len(self.kinds)} kinds")
            interval = watchdog_interval()
            if interval is not None:
                helpers.append(asyncio.create_task(
                    watchdog(lambda: self._healthy(slots, listen_task), interval),
                    name="watchdog"))
            if on_ready is not None:
                on_ready()
            await self._stopping.wait()
            notify("STOPPING=1", "STATUS=draining in-flight jobs")
            await self._drain(slots)
        finally:
            for task in [*slots, *helpers, listen_task]:
                task.cancel()
            await asyncio.gather(*slots, *helpers, listen_task, return_exceptions=True)
            with contextlib.suppress(psycopg.Error):
                await bookkeeper.deregister(settings.worker_id)
            await bookkeeper.close()
            await pool.close()
            log.info("worker_stopped", worker_id=settings.worker_id)

    async def _heartbeat(self, bookkeeper: Bookkeeper) -> None:
        """Keep this worker's row in queue.workers fresh, enqueue reruns whose job had
        already finished, and sweep jobs of kinds no live worker runs (they would otherwise
        wait forever)."""
        kinds = [kind.name for kind in self.kinds]
        while True:
            try:
                reruns, failed = await bookkeeper.heartbeat(
                    self.settings.worker_id, kinds, self.settings.unknown_kind_grace)
                if reruns:
                    log.info("reruns_enqueued", jobs=reruns)
                if failed:
                    log.warning("unknown_kind_jobs_failed", jobs=failed)
            except psycopg.Error as exc:
                log.warning("heartbeat_failed", error=str(exc))
            await asyncio.sleep(self.settings.heartbeat_interval)

    def _healthy(self, slots: list[asyncio.Task[None]], listen_task: asyncio.Task[None]) -> bool:
        """Every slot and the listener still running (they never end on their own while the
        worker runs). Database outages are not unhealthy: the worker reconnects by itself."""
        return not listen_task.done() and all(not task.done() for task in slots)

    async def _drain(self, slots: list[asyncio.Task[None]]) -> None:
        if not slots:
            return
        hard: asyncio.Future[Any] = asyncio.ensure_future(self._hard_stop.wait())
        all_slots: asyncio.Future[Any] = asyncio.gather(*slots, return_exceptions=True)
        await asyncio.wait(
            [all_slots, hard],
            timeout=self.settings.shutdown_grace,
            return_when=asyncio.FIRST_COMPLETED,
        )
        hard.cancel()
        unfinished = [task for task in slots if not task.done()]
        if unfinished:
            log.warning("drain_grace_expired" if not self._hard_stop.is_set() else "hard_stop",
                        rolled_back_slots=len(unfinished))
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)

    async def _slot(self, executor: Executor, kind: JobKind) -> None:
        waker = self._wake[kind.name]
        failures = 0
        while not self._stopping.is_set():
            waker.claiming()  # a NOTIFY during the claim is owed to the next idle wait
            try:
                claimed = await executor.run_once(kind)
                failures = 0
            except (psycopg.OperationalError, psycopg.InterfaceError, OwnershipLost) as exc:
                failures += 1
                delay = min(0.05 * 2**failures, 5.0)
                log.warning("claim_failed", kind=kind.name, error=str(exc), retry_in=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                continue
            except Exception:  # keep the slot alive; the error is logged with its traceback
                log.exception("slot_error", kind=kind.name)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 1.0)
                continue
            if claimed == 0 and not self._stopping.is_set():
                await self._idle(waker)

