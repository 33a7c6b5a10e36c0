"""The systemd notify protocol without systemd: READY, STATUS, STOPPING, EXTEND_TIMEOUT_USEC
and watchdog pings, plus what the service manager tells a process about itself.

Datagrams to $NOTIFY_SOCKET; with the variable unset every call does nothing.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger("worker.systemd")


def under_systemd() -> bool:
    """Whether this process is a systemd service (systemd sets INVOCATION_ID for each run)."""
    return bool(os.environ.get("INVOCATION_ID"))


def journal_stream(fd: int) -> bool:
    """Whether descriptor `fd` is the journal's stream. systemd names that stream's device
    and inode in JOURNAL_STREAM; a child whose output was redirected inherits the variable,
    so the descriptor itself is compared."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        info = os.fstat(fd)
    except OSError:
        return False
    return (info.st_dev, info.st_ino) == (int(device), int(inode))


def notify(*lines: str) -> bool:
    """Send `KEY=value` lines to the service manager; False when there is none to tell."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto("\n".join(lines).encode(), address)
        except OSError as exc:
            log.warning("sd_notify_failed", error=str(exc))
            return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between pings (half of WatchdogSec), or None when no watchdog is armed."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000 / 2
    except ValueError:
        return None


async def watchdog(healthy: Callable[[], bool], interval: float) -> None:
    """Ping every `interval` seconds while `healthy()` holds.

    Runs on the worker's own event loop, so a loop that is blocked or starved cannot ping:
    each ping also requires that this task was woken close to on time.
    """
    max_lag = max(interval, 0.5)
    while True:
        expected = time.monotonic() + interval
        await asyncio.sleep(interval)
        lag = time.monotonic() - expected
        if lag > max_lag:
            log.warning("event_loop_lag", lag_s=round(lag, 3))
            continue
        if healthy():
            notify("WATCHDOG=1")
        else:
            log.warning("watchdog_withheld", reason="worker unhealthy")
