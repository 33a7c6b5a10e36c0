"""The worker: slots that claim and run jobs, woken by NOTIFY and by a periodic poll.

Stops on SIGTERM/SIGINT: no new claims, in-flight jobs get a grace period, the rest are
rolled back without using up their attempt; a second signal stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

from worker import metrics
from worker.attempts import Bookkeeper
from worker.config import Settings
from worker.db import register_vector_types
from worker.errors import ConfigError, OwnershipLost
from worker.executor import Conn, EventHook, Executor
from worker.exposition import Exposition
from worker.health import Health
from worker.listener import Listener
from worker.registry import JobKind, Registry
from worker.systemd import notify, watchdog, watchdog_interval
from worker.wakeup import SlotWaker

log = structlog.get_logger("worker.loop")

# seconds beyond the shutdown grace that closing the pool, the listener and the bookkeeper
# may take; asked of systemd with the grace when the drain starts
_CLOSE_MARGIN_S = 15.0


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
    def __init__(
        self, settings: Settings, dsn: str, registry: Registry, *,
        on_event: EventHook | None = None,
        model_answers: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        """`on_event`: a debug hook that sees each job pass the executor's steps, with a
        time.monotonic() stamp (worker.executor.EventHook); the bench's pickup trace uses
        it. Unset, it costs one check per step. `model_answers`: asks the model endpoint
        whether it answers ("" when it does) for /readyz; none: no model to ask."""
        self.dsn = dsn
        self.kinds: list[JobKind] = registry.configured(settings.concurrency, settings.batch_size)
        self.settings = checked_timeouts(settings, self.kinds)
        self._wakers = {kind.name: SlotWaker(self.settings.poll_interval) for kind in self.kinds}
        self._stopping = asyncio.Event()
        self._hard_stop = asyncio.Event()
        self._on_event = on_event
        self.ready = asyncio.Event()
        self.listener: Listener | None = None
        self._model_answers = model_answers
        self.health: Health | None = None  # with the metrics endpoint only
        self.exposition: Exposition | None = None

    def wake(self, kind: str | None) -> None:
        """A NOTIFY for `kind` (or for every kind, when None) arrived: one idle slot of the
        kind claims, and wakes the next only if its claim comes back full (wakeup.py)."""
        if kind is None:
            for waker in self._wakers.values():
                waker.wake_one()
            return
        if self._on_event is not None:
            self._on_event("notified", None, time.monotonic())
        if kind in self._wakers:
            self._wakers[kind].wake_one()

    def stop(self) -> None:
        if self._stopping.is_set():
            log.warning("second_stop_signal", action="stopping at once")
            self._hard_stop.set()
        else:
            log.info("stop_requested", grace_s=self.settings.shutdown_grace)
        self._stopping.set()
        for waker in self._wakers.values():
            waker.wake_all()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    # -- run: open, start, wait for the stop, drain, close ----------------------------------

    async def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Open the claim pool and LISTEN, register, start the helpers and the slots, then
        wait for stop(); drain the claims in flight and close everything."""
        if not self.kinds:
            log.warning("no_job_kinds", hint="set WORKER_PLUGINS or install job kinds")
        pool = self._claim_pool()
        bookkeeper = Bookkeeper(self.dsn, f"{self._app_name}:attempts",
                                session_options(self.settings))
        self.listener = Listener(self.dsn, self.wake, f"{self._app_name}:listen")
        await pool.open(wait=True, timeout=30)
        listen_task = asyncio.create_task(self.listener.run(), name="listener")
        tasks = [listen_task]
        try:
            await asyncio.wait_for(self.listener.listening.wait(), 30)
            await bookkeeper.register(self.settings.worker_id, [k.name for k in self.kinds])
            tasks += self._start_helpers(bookkeeper)
            slots = self._start_slots(pool, bookkeeper)
            tasks += slots
            if self.health is not None:
                self.health.running = lambda: self._healthy(slots, listen_task)
            tasks += self._announce_ready(slots, listen_task)
            if on_ready is not None:
                on_ready()
            await self._stopping.wait()
            # the drain may take the grace period and then the close: ask systemd for that
            # much, so a grace longer than TimeoutStopSec is not cut short by SIGKILL
            extend = int((self.settings.shutdown_grace + _CLOSE_MARGIN_S) * 1_000_000)
            notify("STOPPING=1", "STATUS=draining in-flight jobs",
                   f"EXTEND_TIMEOUT_USEC={extend}")
            await self._drain(slots)
        finally:
            await self._close(tasks, bookkeeper, pool)

    @property
    def _app_name(self) -> str:
        return f"worker:{self.settings.worker_id}"

    def _claim_pool(self) -> AsyncConnectionPool[Conn]:
        """One connection per slot: a claim holds its connection until it commits."""
        async def configure(conn: Conn) -> None:
            conn.prepare_threshold = 0  # the same few queries run all day
            await register_vector_types(conn)

        size = max(sum(kind.concurrency for kind in self.kinds), 1)
        return AsyncConnectionPool(
            self.dsn,
            connection_class=Conn,
            min_size=size,
            max_size=size,
            kwargs={"application_name": self._app_name, "options": claim_options(self.settings),
                    "row_factory": psycopg.rows.dict_row},
            configure=configure,
            open=False,
            name="worker",
        )

    def _start_helpers(self, bookkeeper: Bookkeeper) -> list[asyncio.Task[None]]:
        """The heartbeat; with metrics served, the HTTP endpoint (worker/exposition.py),
        the loop's tick /healthz reads, and the model check /readyz reports."""
        helpers = [asyncio.create_task(self._heartbeat(bookkeeper), name="heartbeat")]
        if self.settings.metrics_port:
            options = session_options(self.settings)
            self.health = health = Health(self.dsn, options)
            self.exposition = Exposition(self.settings.metrics_addr, self.settings.metrics_port,
                                         health, self.dsn, options)
            helpers.append(asyncio.create_task(health.tick(), name="tick"))
            if self._model_answers is None:
                health.model = ""  # no model kinds: nothing to wait for
            else:
                helpers.append(asyncio.create_task(health.watch_model(self._model_answers),
                                                   name="model-check"))
        return helpers

    def _start_slots(
        self, pool: AsyncConnectionPool[Conn], bookkeeper: Bookkeeper
    ) -> list[asyncio.Task[None]]:
        settings = self.settings
        executor = Executor(
            pool=pool, bookkeeper=bookkeeper, worker_id=settings.worker_id,
            retry_base=settings.retry_base, retry_cap=settings.retry_cap,
            stopping=self._stopping, on_event=self._on_event,
        )
        return [
            asyncio.create_task(self._slot(executor, kind), name=f"slot:{kind.name}:{i}")
            for kind in self.kinds
            for i in range(kind.concurrency)
        ]

    def _announce_ready(
        self, slots: list[asyncio.Task[None]], listen_task: asyncio.Task[None]
    ) -> list[asyncio.Task[None]]:
        """Log it, set `ready`, tell systemd; and start its watchdog when it asks for one."""
        log.info("worker_ready", worker_id=self.settings.worker_id,
                 kinds={k.name: {"concurrency": k.concurrency, "batch_size": k.batch_size}
                        for k in self.kinds})
        self.ready.set()
        notify("READY=1", f"STATUS=working: {len(slots)} slots over {len(self.kinds)} kinds")
        interval = watchdog_interval()
        if interval is None:
            return []
        return [asyncio.create_task(
            watchdog(lambda: self._healthy(slots, listen_task), interval), name="watchdog")]

    async def _close(
        self, tasks: list[asyncio.Task[None]], bookkeeper: Bookkeeper,
        pool: AsyncConnectionPool[Conn],
    ) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(psycopg.Error):
            await bookkeeper.deregister(self.settings.worker_id)
        await bookkeeper.close()
        await pool.close()
        if self.exposition is not None:
            await asyncio.to_thread(self.exposition.close)
        if self.health is not None:
            await asyncio.to_thread(self.health.close)
        log.info("worker_stopped", worker_id=self.settings.worker_id)

    # -- what runs meanwhile ------------------------------------------------------------------

    async def _heartbeat(self, bookkeeper: Bookkeeper) -> None:
        """Keep this worker's row in queue.workers fresh, enqueue reruns whose job had
        already finished, sweep jobs of kinds no live worker runs (they would otherwise
        wait forever), enqueue the cron schedules' due slots, and take the fleet's turn at
        retention when it is this worker's."""
        kinds = [kind.name for kind in self.kinds]
        while True:
            try:
                reruns, failed = await bookkeeper.heartbeat(
                    self.settings.worker_id, kinds, self.settings.unknown_kind_grace)
                if reruns:
                    log.info("reruns_enqueued", jobs=reruns)
                if failed:
                    log.warning("unknown_kind_jobs_failed", jobs=failed)
                fired = await bookkeeper.fire_schedules()
                if fired:
                    log.info("schedules_fired", slots=fired)
                if self.settings.maintenance_interval > 0:
                    pruned = await bookkeeper.maintain(self.settings.retention())
                    if any(pruned.values()):
                        log.info("pruned", **pruned)
            except psycopg.Error as exc:
                log.warning("heartbeat_failed", error=str(exc))
            await asyncio.sleep(self.settings.heartbeat_interval)

    def _healthy(self, slots: list[asyncio.Task[None]], listen_task: asyncio.Task[None]) -> bool:
        """Every slot and the listener still running (they never end on their own while the
        worker runs). Database outages are not unhealthy: the worker reconnects by itself."""
        return not listen_task.done() and all(not task.done() for task in slots)

    async def _slot(self, executor: Executor, kind: JobKind) -> None:
        waker = self._wakers[kind.name]
        failures = 0
        while not self._stopping.is_set():
            waker.claiming()  # a NOTIFY during the claim is owed to the next idle wait
            try:
                claimed = await executor.run_once(kind, waker)
                failures = 0
            except (psycopg.OperationalError, psycopg.InterfaceError, OwnershipLost) as exc:
                failures += 1
                metrics.claim_failed(kind.name)
                delay = min(0.05 * 2**failures, 5.0)
                log.warning("claim_failed", kind=kind.name, error=str(exc), retry_in=delay)
                await self._pause(delay)
                continue
            except Exception:  # keep the slot alive; the error is logged with its traceback
                log.exception("slot_error", kind=kind.name)
                await self._pause(1.0)
                continue
            if claimed == 0 and not self._stopping.is_set():
                await waker.wait()

    async def _pause(self, seconds: float) -> None:
        """Before a slot claims again after an error; cut short by a stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _drain(self, slots: list[asyncio.Task[None]]) -> None:
        """Give the claims in flight the grace period to finish; roll back the rest."""
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
