"""The command line as a user runs it: embedded database by default, DATABASE_URL otherwise."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.procs import ROOT, WorkerProcess
from worker import embedded


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120
         ) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith("WORKER_") and k != "DATABASE_URL"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "worker", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def pgdata(tmp_path: Path) -> Any:
    tmp_path.chmod(0o755)  # the embedded server runs as its own user when we are root
    path = tmp_path / "pg"
    yield path
    embedded.stop_server(path)  # only if a failing test left it running


def test_migrate_and_run_on_the_embedded_server_with_no_database_url(pgdata: Path) -> None:
    env = {"WORKER_EMBEDDED_PGDATA": str(pgdata)}
    first = _cli("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "applied 0001_queue" in first.stdout
    again = _cli("migrate", env=env)
    assert again.returncode == 0 and "up to date" in again.stdout
    # the server was started for the command and stopped after it
    assert embedded._running_uri(pgdata.resolve()) is None

    proc = WorkerProcess(None, env=env, plugins="")
    try:
        proc.wait_ready()
        uri = embedded._running_uri(pgdata.resolve())
        assert uri is not None
        with psycopg.connect(uri, autocommit=True) as conn:
            listeners = conn.execute("SELECT count(*) FROM pg_stat_activity "
                                     "WHERE application_name LIKE 'worker:%:listen'").fetchone()
        assert listeners == (1,)
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
    finally:
        proc.stop()
    assert embedded._running_uri(pgdata.resolve()) is None


def test_a_server_started_by_someone_else_is_left_running(pgdata: Path) -> None:
    env = {"WORKER_EMBEDDED_PGDATA": str(pgdata)}
    started = _cli("db", "start", env=env)
    assert started.returncode == 0, started.stderr
    try:
        assert _cli("migrate", env=env).returncode == 0
        assert embedded._running_uri(pgdata.resolve()) is not None
        status = _cli("status", env=env)
        assert status.returncode == 0 and "no jobs" in status.stdout
    finally:
        stopped = _cli("db", "stop", env=env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout


def test_under_systemd_no_database_url_is_refused_instead_of_an_embedded_server() -> None:
    """A unit whose EnvironmentFile lost DATABASE_URL must not start PostgreSQL beside the
    installation; systemd marks its services with INVOCATION_ID."""
    for command in (["migrate"], ["run"], ["status"]):
        result = _cli(*command, env={"INVOCATION_ID": "0123456789abcdef"})
        assert result.returncode == 3, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "set DATABASE_URL" in lines[0], result.stderr
    assert not (ROOT / ".data" / "pg.users.json").exists() or not embedded._running_uri(
        (ROOT / ".data" / "pg").resolve())


def test_run_refuses_an_unmigrated_database(empty_dsn: str) -> None:
    result = _cli("run", env={"DATABASE_URL": empty_dsn})
    assert result.returncode == 3
    assert "python -m worker migrate" in result.stderr


def test_an_unreachable_database_is_a_one_line_error_without_the_password(tmp_path: Path) -> None:
    # a server that does not answer: the error names the problem, in one line, exit 1
    bad = f"postgresql://nobody:secret-pw@/nodb?host={tmp_path}&connect_timeout=2"
    result = _cli("migrate", env={"DATABASE_URL": bad})
    assert result.returncode == 1
    assert "database error" in result.stderr
    assert "secret-pw" not in result.stderr + result.stdout


def test_operator_commands_through_the_cli(dsn: str) -> None:
    env = {"DATABASE_URL": dsn}
    with psycopg.connect(dsn, autocommit=True) as conn:
        job = conn.execute("SELECT queue.enqueue('k', 's')").fetchone()[0]  # type: ignore[index]
        conn.execute("UPDATE queue.jobs SET status = 'failed', error_code = 'timeout', "
                     "completed_at = now() WHERE id = %s", (job,))
    status = _cli("status", env=env)
    assert status.returncode == 0
    assert "timeout" in status.stdout and "failed" in status.stdout
    bulk = _cli("requeue", "--failed", "--kind", "k", "--error-code", "timeout", env=env)
    assert bulk.returncode == 0 and "requeued 1" in bulk.stdout
    with psycopg.connect(dsn, autocommit=True) as conn:
        new = conn.execute("SELECT requeued_to FROM queue.jobs WHERE id = %s",
                           (job,)).fetchone()[0]  # type: ignore[index]
    cancelled = _cli("cancel", str(new), env=env)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    again = _cli("cancel", str(new), env=env)
    assert again.returncode == 4
    missing = _cli("requeue", "999999", env=env)
    assert missing.returncode == 4 and "does not exist" in missing.stderr
    usage = _cli("requeue", env=env)
    assert usage.returncode == 2 and len(usage.stderr.strip().splitlines()) <= 2
    for command in ("run", "migrate", "status", "requeue", "cancel", "backfill", "db",
                    "schedule", "unschedule"):
        helped = _cli(command, "--help", env=env)
        assert helped.returncode == 0 and "usage:" in helped.stdout


def test_pause_and_resume_a_kind_through_the_cli(dsn: str) -> None:
    env = {"DATABASE_URL": dsn}
    paused = _cli("pause", "embedding", "--reason", "re-embedding with a new model", env=env)
    assert paused.returncode == 0 and "embedding paused" in paused.stdout
    again = _cli("pause", "embedding", env=env)
    assert again.returncode == 0 and "already paused" in again.stdout
    status = _cli("status", env=env)
    assert status.returncode == 0
    assert "paused" in status.stdout and "re-embedding with a new model" in status.stdout
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT kind FROM queue.paused_kinds").fetchall() == [
            ("embedding",)]
    resumed = _cli("resume", "embedding", env=env)
    assert resumed.returncode == 0 and "embedding resumed" in resumed.stdout
    not_paused = _cli("resume", "embedding", env=env)
    assert not_paused.returncode == 4 and "was not paused" in not_paused.stdout
    assert "paused" not in _cli("status", env=env).stdout


def test_schedule_and_unschedule_through_the_cli(dsn: str) -> None:
    env = {"DATABASE_URL": dsn}
    made = _cli("schedule", "nightly", "embedding", "0 3 * * *", "--payload",
                '{"course_id": 7}', env=env)
    assert made.returncode == 0 and "nightly scheduled" in made.stdout, made.stderr
    again = _cli("schedule", "nightly", "embedding", "@daily", env=env)
    assert again.returncode == 0 and "nightly rescheduled" in again.stdout
    status = _cli("status", env=env)
    assert "schedules" in status.stdout and "@daily" in status.stdout
    report = json.loads(_cli("status", "--json", env=env).stdout)
    assert [(s["name"], s["kind"], s["cron"]) for s in report["schedules"]] == [
        ("nightly", "embedding", "@daily")]
    for bad, phrase in ((["x", "embedding", "61 * * * *"], "outside 0-59"),
                        (["x", "embedding", "* * *"], "five fields"),
                        (["x y", "embedding", "* * * * *"], "schedule name"),
                        (["x", "embedding", "* * * * *", "--payload", "[1]"], "JSON object"),
                        (["x", "embedding", "* * * * *", "--payload", "{"], "not JSON")):
        refused = _cli("schedule", *bad, env=env)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and len(lines) == 1 and phrase in lines[0], refused
        assert lines[0].startswith("python -m worker schedule: error: "), lines[0]
    removed = _cli("unschedule", "nightly", env=env)
    assert removed.returncode == 0 and "nightly unscheduled" in removed.stdout
    gone = _cli("unschedule", "nightly", env=env)
    assert gone.returncode == 4 and "no schedule named nightly" in gone.stdout
    assert "schedules" not in _cli("status", env=env).stdout


def test_prune_through_the_cli(dsn: str) -> None:
    env = {"DATABASE_URL": dsn, "WORKER_RETAIN_COMPLETED_DAYS": "2"}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for days in (5, 3, 0):  # the 0-day one is the subject's latest
            conn.execute("INSERT INTO queue.jobs (kind, subject, status, completed_at) "
                         "VALUES ('k', 's', 'completed', now() - make_interval(days => %s))",
                         (days,))
    dry = _cli("prune", "--dry-run", env=env)
    assert dry.returncode == 0 and "would delete (at most one batch of each): 2 jobs" in dry.stdout
    done = _cli("prune", env=env)
    assert done.returncode == 0 and "deleted: 2 jobs, 0 model_calls" in done.stdout
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM queue.jobs").fetchone() == (1,)


def test_status_shows_the_occupancy_of_a_cross_process_gate(dsn: str) -> None:
    import asyncio

    from worker.models.gate import Gates

    env = {"DATABASE_URL": dsn, "WORKER_LLM_GATE_CROSS_PROCESS": "true",
           "WORKER_LLM_GATE_NAME": "mac-mini-mlx", "WORKER_LLM_GATE_CAPACITY": "1"}

    async def holding() -> subprocess.CompletedProcess[str]:
        gates = Gates(dsn)
        gate = gates.get("mac-mini-mlx", 1, cross_process=True)
        try:
            async with gate.hold():
                return await asyncio.to_thread(_cli, "status", env=env)
        finally:
            await gates.aclose()

    held = asyncio.run(holding())
    assert held.returncode == 0, held.stderr
    assert "model gate mac-mini-mlx: 1/1 slots in use" in held.stdout
    free = _cli("status", env=env)
    assert "model gate mac-mini-mlx: 0/1 slots in use" in free.stdout


@pytest.mark.parametrize(("variables", "says"), [
    # a job may run 120 s but the server ends a claim idle for 1 s: paid twice, worker_lost
    ({"WORKER_IDLE_IN_TX_TIMEOUT_MS": "1000"}, "WORKER_IDLE_IN_TX_TIMEOUT_MS=1000"),
    ({"WORKER_LOCK_TIMEOUT_MS": "30000"}, "WORKER_LOCK_TIMEOUT_MS=30000 must be below"),
])
def test_settings_that_contradict_each_other_are_refused_at_start_up(
        dsn: str, variables: dict[str, str], says: str) -> None:
    env = {"DATABASE_URL": dsn, "WORKER_PLUGINS": "tests.support.kinds", "WORKER_KINDS": "",
           **variables}
    result = _cli("run", env=env)
    assert result.returncode == 3, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr


@pytest.mark.parametrize("url", [
    "postgresql//worker_login:S3cretPw42@db/app",      # a missing colon
    "postgresql://worker_login:S3cretPw42%zz@db/app",  # a bad percent-escape
])
def test_a_mistyped_database_url_is_one_masked_line_and_exit_3(url: str) -> None:
    result = _cli("status", env={"DATABASE_URL": url})
    assert result.returncode == 3, result.stderr
    assert "S3cretPw42" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "DATABASE_URL" in result.stderr


def test_an_unexpected_error_is_one_masked_line_not_a_traceback(dsn: str,
                                                                 tmp_path: Path) -> None:
    """A plugin that fails in an unforeseen way while the worker assembles, quoting the API
    key, which has no shape a pattern knows: the configured value itself is masked."""
    (tmp_path / "boom_plugin.py").write_text(
        "import os\n"
        "def register(registry):\n"
        "    raise RuntimeError('rejected key ' + os.environ['WORKER_OPENAI_API_KEY'])\n")
    result = _cli("run", env={"WORKER_PLUGINS": "boom_plugin", "PYTHONPATH": str(tmp_path),
                              "DATABASE_URL": dsn, "WORKER_KINDS": "",
                              "WORKER_OPENAI_API_KEY": "gsk_live_Hunter2Pw"})
    assert result.returncode == 1, result.stderr
    assert "Hunter2Pw" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert "RuntimeError: rejected key ***" in result.stderr


def test_a_database_that_is_not_utf8_is_refused_at_start(pg_server: str) -> None:
    from tests.support import db as testdb

    name = "euc_kr_refused"
    testdb.drop_database(pg_server, name)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'EUC_KR' "
                     "LC_COLLATE 'C' LC_CTYPE 'C'")
    try:
        for command in (["migrate"], ["run", "--migrate"]):
            result = _cli(*command, env={"DATABASE_URL": testdb.dsn_for(pg_server, name)})
            assert result.returncode == 3, result.stderr
            assert "EUC_KR" in result.stderr and "UTF8" in result.stderr, result.stderr
    finally:
        testdb.drop_database(pg_server, name)


def test_the_openai_endpoint_without_a_key_is_refused_at_start(dsn: str) -> None:
    """No OPENAI_API_KEY and no other endpoint: every job would fail `bad_request` (401);
    the worker says so at start instead, in one line, exit 3."""
    result = _cli("run", env={"DATABASE_URL": dsn, "WORKER_KINDS": "explanation"})
    assert result.returncode == 3, result.stderr
    assert "OPENAI_API_KEY" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
