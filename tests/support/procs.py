"""Real worker processes for acceptance tests: `python -m worker run` as a subprocess.

Each is stopped by its own PID when the test ends; output lines are collected for asserts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    def __init__(self, dsn: str | None, *, args: tuple[str, ...] = ("run",),
                 env: dict[str, str] | None = None, plugins: str = "tests.support.kinds",
                 command: tuple[str, ...] = (sys.executable, "-m", "worker"),
                 cwd: Path = ROOT) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
        full_env.pop("DATABASE_URL", None)
        if dsn is not None:
            full_env["DATABASE_URL"] = dsn
        full_env.update({
            "WORKER_PLUGINS": plugins,
            "WORKER_KINDS": "",
            "WORKER_LOG_FORMAT": "json",
            "WORKER_POLL_INTERVAL": "0.5",
            "PYTHONUNBUFFERED": "1",
        })
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [*command, *args], cwd=cwd, env=full_env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if '"worker_ready"' in line:
                self._ready.set()

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = []
        for line in list(self.lines):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and (name is None or record.get("event") == name):
                found.append(record)
        return found

    def wait_ready(self, timeout: float = 30) -> None:
        if not self._ready.wait(timeout):
            self.stop()
            raise AssertionError("worker never became ready:\n" + "\n".join(self.lines[-30:]))

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 30) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not go; by PID only."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(10)
        self._reader.join(5)

    def output(self) -> str:
        return "\n".join(self.lines)


def wait_for(predicate: Any, timeout: float = 30, interval: float = 0.05,
              message: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(interval)
