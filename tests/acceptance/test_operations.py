"""Operating the worker: systemd unit and notify protocol, Procfile under honcho, least
privilege, and no secrets in logs. Real processes, real sockets, real signals."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.support.db import sql as _sql
from tests.support.http import free_port
from tests.support.procs import ROOT, WorkerProcess, wait_for

UNIT = ROOT / "deploy" / "pg-llm-worker.service"
MIGRATE_UNIT = ROOT / "deploy" / "pg-llm-worker-migrate.service"
DASHBOARD_UNIT = ROOT / "deploy" / "pg-llm-worker-dashboard.service"


def _enqueue(dsn: str, kind: str, payload: str = "{}") -> int:
    return int(_sql(dsn, "SELECT queue.enqueue(%s, NULL, %s::jsonb) AS id",
                    (kind, payload))[0]["id"])


def _started(dsn: str, job: int) -> bool:
    return bool(_sql(dsn, "SELECT 1 FROM test_started WHERE job_id = %s", (job,)))


@pytest.mark.parametrize("unit", [UNIT, MIGRATE_UNIT, DASHBOARD_UNIT],
                         ids=lambda path: path.name)
def test_the_unit_files_pass_systemd_analyze_verify(tmp_path: Path, unit: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package `systemd`); "
                    "the unit files were not verified on this machine")
    # verify checks that ExecStart exists, so point the units at this venv's console script
    script = Path(sys.executable).with_name("pg-llm-worker")
    for source in (UNIT, MIGRATE_UNIT, DASHBOARD_UNIT):  # units order themselves after migrate
        (tmp_path / source.name).write_text(source.read_text().replace(
            "/opt/pg-llm-worker/bin/pg-llm-worker", str(script)))
    result = subprocess.run([analyze, "verify", str(tmp_path / unit.name)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == ""


def test_the_worker_unit_says_what_operations_rely_on() -> None:
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "KillSignal=SIGTERM",
                 "EnvironmentFile=", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "PrivateTmp=yes", "StateDirectory=pg-llm-worker",
                 "RestartPreventExitStatus=2 3", "SyslogIdentifier=pg-llm-worker",
                 "ExecStart=/opt/pg-llm-worker/bin/pg-llm-worker run"):
        assert line in text
    stop_timeout = int(text.split("TimeoutStopSec=")[1].split()[0])
    from worker.config import Settings

    assert stop_timeout > Settings.model_fields["shutdown_grace"].default
    migrate = MIGRATE_UNIT.read_text()
    for line in ("Type=oneshot", "ExecStart=/opt/pg-llm-worker/bin/pg-llm-worker migrate",
                 "Before=pg-llm-worker.service", "EnvironmentFile=/etc/pg-llm-worker/migrate.env"):
        assert line in migrate


class NotifySocket:
    """A datagram socket standing in for systemd, recording (time, message) pairs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def lines(self, prefix: str) -> list[float]:
        return [t for t, line in list(self.messages) if line.startswith(prefix)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def test_ready_watchdog_and_stopping_over_a_real_notify_socket(
    dsn: str, tmp_path: Path
) -> None:
    sock = NotifySocket(tmp_path / "notify.sock")
    proc = WorkerProcess(dsn, env={"NOTIFY_SOCKET": str(sock.path),
                                   "WATCHDOG_USEC": "400000"})  # ping every 0.2 s
    try:
        proc.wait_ready()
        wait_for(lambda: sock.lines("READY=1"), message="READY=1")
        wait_for(lambda: len(sock.lines("WATCHDOG=1")) >= 5, message="watchdog pings")
        job = _enqueue(dsn, "test.wedge", '{"seconds": 2.0}')
        wait_for(lambda: _started(dsn, job), message="wedge started")
        wedge_started = time.monotonic()
        wait_for(lambda: _sql(dsn, "SELECT 1 FROM queue.jobs WHERE id = %s AND "
                                   "status = 'completed'", (job,)), message="wedge done")
        pings_after = len(sock.lines("WATCHDOG=1"))
        wait_for(lambda: len(sock.lines("WATCHDOG=1")) >= pings_after + 3,
                 message="pings resume after the loop is free again")
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
        wait_for(lambda: sock.lines("STOPPING=1"), message="STOPPING=1")
    finally:
        proc.stop()
        sock.close()
    pings = sock.lines("WATCHDOG=1")
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    # while the loop was blocked (2 s) no ping went out; otherwise they came every ~0.2 s
    assert max(gaps) >= 1.5
    assert any(a <= wedge_started + 0.5 and b >= wedge_started + 1.5
               for a, b in itertools.pairwise(pings))
    assert sock.lines("READY=1")[0] < pings[0]
    # the drain asks systemd for the grace period and a margin, so a WORKER_SHUTDOWN_GRACE
    # longer than TimeoutStopSec is not cut short by SIGKILL
    [extend] = [line for _t, line in sock.messages if line.startswith("EXTEND_TIMEOUT_USEC=")]
    from worker.config import Settings

    grace = Settings.model_fields["shutdown_grace"].default
    assert int(extend.split("=")[1]) > grace * 1_000_000


def test_the_procfile_worker_under_honcho_drains_on_sigterm(dsn: str) -> None:
    honcho = Path(sys.executable).with_name("honcho")
    assert honcho.exists(), "honcho is a dev dependency"
    procfile = (ROOT / "Procfile").read_text()
    # exec: the shell honcho starts becomes the worker, so SIGTERM reaches it directly
    assert procfile.strip() == "worker: exec pg-llm-worker run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
    env.update({
        "DATABASE_URL": dsn, "WORKER_PLUGINS": "tests.support.kinds", "WORKER_KINDS": "",
        "WORKER_LOG_FORMAT": "json", "WORKER_CONCURRENCY": "test.slow=1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        # a console script's sys.path starts at its own folder, not the working directory:
        # the checkout is named so the test plugin (and this checkout's worker) is found
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
    })
    proc = subprocess.Popen([str(honcho), "start", "-f", str(ROOT / "Procfile")], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any('"worker_ready"' in line for line in lines), message="ready")
        running = _enqueue(dsn, "test.slow", '{"seconds": 2}')
        wait_for(lambda: _started(dsn, running), message="job started")
        queued = [_enqueue(dsn, "test.slow", '{"seconds": 0}') for _ in range(3)]
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(60)  # honcho itself exits 128+SIGTERM after forwarding the signal
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the session we started, by its id
            proc.wait(10)
        reader.join(5)
    assert _sql(dsn, "SELECT status FROM queue.jobs WHERE id = %s", (running,)) == [
        {"status": "completed"}]
    assert _sql(dsn, "SELECT DISTINCT status, attempts FROM queue.jobs WHERE id = ANY(%s)",
                (queued,)) == [{"status": "pending", "attempts": 0}]
    assert any('"worker_stopped"' in line for line in lines)
    assert any("stopped (rc=0)" in line for line in lines), "".join(lines[-5:])


def test_the_worker_runs_as_the_least_privilege_role(dsn: str) -> None:
    _sql(dsn, "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = "
              "'worker_login') THEN CREATE ROLE worker_login LOGIN IN ROLE llm_worker; "
              "END IF; END $$")
    worker_dsn = make_conninfo(dsn, user="worker_login")
    proc = WorkerProcess(worker_dsn, env={"WORKER_METRICS_PORT": "0"})
    try:
        proc.wait_ready()
        ok = _enqueue(dsn, "test.effect")
        retried = _enqueue(dsn, "test.flaky", '{"delay": 0}')
        wait_for(lambda: _sql(dsn, "SELECT bool_and(status IN ('completed', 'failed')) AS done"
                                   " FROM queue.jobs WHERE id = ANY(%s)",
                              ([ok, retried],))[0]["done"], message="jobs finished as worker_login")
    finally:
        proc.stop()
    assert _sql(dsn, "SELECT status FROM queue.jobs WHERE id = %s", (ok,)) == [
        {"status": "completed"}]
    with psycopg.connect(worker_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("worker_login",)
        for statement in (
            "CREATE TABLE queue.sneaky (id int)",
            "CREATE TABLE public.sneaky (id int)",
            "CREATE SCHEMA sneaky",
            "ALTER TABLE queue.jobs ADD COLUMN sneaky int",
            "DROP TABLE queue.attempts",
            "DELETE FROM queue.jobs",
            "UPDATE queue.jobs SET kind = 'x'",
            "TRUNCATE queue.jobs",
            "SELECT * FROM app.users",
            "CREATE FUNCTION queue.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement.encode())


def test_no_secret_reaches_the_logs(dsn: str, tmp_path: Path) -> None:
    password = "Pw-7c1b9e-never-log-me"
    api_key = "sk-test-3f9a8e7d6c5b4a39281706"
    _sql(dsn, "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = "
              "'worker_pw') THEN CREATE ROLE worker_pw LOGIN IN ROLE llm_worker; END IF; "
              "END $$")
    worker_dsn = make_conninfo(dsn, user="worker_pw", password=password)
    port = free_port()
    proc = WorkerProcess(worker_dsn, env={"OPENAI_API_KEY": api_key,
                                          "WORKER_METRICS_PORT": str(port),
                                          "WORKER_LOG_LEVEL": "debug"})
    try:
        proc.wait_ready()
        for payload in ('{"final": true}', '{"delay": 0}'):
            _enqueue(dsn, "test.flaky", payload)
        wait_for(lambda: len(proc.events("job_failed")) >= 2, message="failures logged")
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b'worker_jobs_total{error_code="bad_input",kind="test.flaky",outcome="failed"}' \
            in page
        # a database outage while running: the reconnect errors are logged too
        _sql(dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                  "WHERE usename = 'worker_pw'")
        wait_for(lambda: proc.events("listen_connection_lost"), message="outage logged")
        proc.signal(signal.SIGTERM)
        proc.wait()
    finally:
        proc.stop()
    output = proc.output()
    assert output.count("\n") > 10
    assert password not in output and api_key not in output
    rows = _sql(dsn, "SELECT j.error_message AS a, t.error_message AS b FROM queue.jobs j "
                     "LEFT JOIN queue.attempts t ON t.job_id = j.id")
    assert all(password not in str(r) and api_key not in str(r) for r in rows)

