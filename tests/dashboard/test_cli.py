"""`python -m worker dashboard` as an operator starts it: a real process on 127.0.0.1 that
serves the pages until SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.dashboard.conftest import seed
from tests.support.http import free_port
from tests.support.procs import wait_for

ROOT = Path(__file__).resolve().parents[2]



def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body: bytes = response.read()
            return body.decode()
    except OSError:
        return None


def test_the_dashboard_command_serves_on_loopback_until_sigterm(dsn: str) -> None:
    seed(dsn)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
    env.update({"DATABASE_URL": dsn, "WORKER_DASHBOARD_PORT": str(port),
                "PYTHONPATH": str(ROOT)})
    proc = subprocess.Popen([sys.executable, "-m", "worker", "dashboard"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        pages: list[str] = []
        wait_for(lambda: bool(pages.append(_get(f"http://127.0.0.1:{port}/") or "")
                              or pages[-1]), message="the dashboard answers")
        assert "weakness_analysis" in pages[-1] and "no token: read-only" in pages[-1]
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    # uvicorn shuts down gracefully, then re-raises the signal it caught: systemd counts an
    # exit by SIGTERM as clean
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Traceback" not in output
    assert f"dashboard on http://127.0.0.1:{port}/ (read-only)" in output


def test_a_guessable_token_is_refused_at_start(dsn: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
    env.update({"DATABASE_URL": dsn, "WORKER_DASHBOARD_TOKEN": "secret",
                "PYTHONPATH": str(ROOT)})
    result = subprocess.run([sys.executable, "-m", "worker", "dashboard"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    assert "WORKER_DASHBOARD_TOKEN: at least 16 characters" in result.stderr
    assert "secret" not in result.stderr.replace("WORKER_DASHBOARD", "")
