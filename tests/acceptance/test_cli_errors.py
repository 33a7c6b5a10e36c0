"""Errors an operator reads: every CLI failure is one masked line with the documented exit
code (2 bad arguments, 3 configuration or schema), and nonsense settings are refused, each
naming its variable and the expected form. docs/operations.md tabulates these runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.support.procs import ROOT, WorkerProcess


def _cli(*args: str, env: dict[str, str] | None = None, argv0: list[str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith("WORKER_") and k not in ("DATABASE_URL", "INVOCATION_ID")}
    full_env.update(env or {})
    return subprocess.run([*(argv0 or [sys.executable, "-m", "worker"]), *args], cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=120)


def _one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# (variables, the variable the line must name, a phrase of the expected form)
BAD_SETTINGS = [
    ({"WORKER_CONCURRENCY": "abc"}, "WORKER_CONCURRENCY", "kind=number"),
    ({"WORKER_CONCURRENCY": "embedding=-3"}, "WORKER_CONCURRENCY", "at least 1"),
    ({"WORKER_BATCH_SIZE": "embedding=0"}, "WORKER_BATCH_SIZE", "at least 1"),
    ({"WORKER_LOG_LEVEL": "verbose"}, "WORKER_LOG_LEVEL", "debug"),
    ({"WORKER_LLM_GATE_CAPACITY": "0"}, "WORKER_LLM_GATE_CAPACITY", "greater than or equal"),
    ({"WORKER_POLL_INTERVAL": "soon"}, "WORKER_POLL_INTERVAL", "number"),
    ({"WORKER_METRICS_ADDR": "localhost"}, "WORKER_METRICS_ADDR", "an IP address"),
    ({"WORKER_LLM_TIMEOUTS": "explanation=7200"}, "WORKER_LLM_TIMEOUTS", "at most 3600"),
    ({"DATABASE_URL": ""}, "DATABASE_URL", "unset it"),
    ({"DATABASE_URL": "postgresql://u:S3cretPw42@db:notaport/app"}, "DATABASE_URL", "port"),
]


@pytest.mark.parametrize(("variables", "name", "form"), BAD_SETTINGS)
def test_a_nonsense_setting_is_refused_naming_the_variable(
        variables: dict[str, str], name: str, form: str) -> None:
    env = {"DATABASE_URL": "postgresql://u:S3cretPw42@127.0.0.1:9/app", **variables}
    line = _one_line(_cli("status", env=env), 3)
    assert line.startswith("configuration error: ") and name in line and form in line, line
    assert "S3cretPw42" not in line


def test_an_unreachable_server_is_one_line_with_the_hint() -> None:
    env = {"DATABASE_URL": "postgresql://u:S3cretPw42@127.0.0.1:9/app?connect_timeout=2"}
    line = _one_line(_cli("migrate", env=env), 1)
    assert line.startswith("database error: ") and "S3cretPw42" not in line


def test_status_with_a_bad_interval_is_a_usage_error(dsn: str) -> None:
    line = _one_line(_cli("status", "--since", "banana", env={"DATABASE_URL": dsn}), 2)
    assert "--since" in line and "banana" in line


def test_operator_commands_on_an_unmigrated_database_say_run_migrate(empty_dsn: str) -> None:
    for command in (["status"], ["requeue", "--failed"], ["cancel", "1"]):
        line = _one_line(_cli(*command, env={"DATABASE_URL": empty_dsn}), 3)
        assert "migrate" in line, line


def test_requeue_of_one_job_refuses_the_bulk_filters(dsn: str) -> None:
    line = _one_line(_cli("requeue", "2", "--kind", "x", env={"DATABASE_URL": dsn}), 2)
    assert "--kind" in line and "--failed" in line


def test_a_metrics_port_in_use_is_one_line_and_exit_3(dsn: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = WorkerProcess(dsn, env={"WORKER_METRICS_PORT": str(port),
                                       "WORKER_LOG_FORMAT": "json"})
        try:
            code = proc.wait(timeout=60)
        finally:
            proc.stop()
    assert code == 3, proc.output()
    assert "Traceback" not in proc.output()
    assert f"WORKER_METRICS_PORT={port}" in proc.output() and "in use" in proc.output()


def test_version_and_the_name_as_invoked() -> None:
    version = _cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == "pg-llm-worker 0.1.0"
    # what the console script does: argv[0] is its path, then main() (imported from this
    # checkout, which an installed script in a shared venv might not be)
    script = [sys.executable, "-c", "import sys; sys.argv[0] = '/usr/bin/pg-llm-worker'; "
              "from worker.cli import main; sys.exit(main())"]
    helped = _cli("--help", argv0=script)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: pg-llm-worker ")
    assert _cli("--help").stdout.startswith("usage: python -m worker ")


def test_status_json_lists_jobs_failures_and_live_workers(dsn: str) -> None:
    proc = WorkerProcess(dsn)
    try:
        proc.wait_ready()
        status = _cli("status", "--json", env={"DATABASE_URL": dsn})
        text = _cli("status", env={"DATABASE_URL": dsn})
    finally:
        proc.stop()
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert set(report) >= {"jobs", "failures", "workers", "gate"}
    [worker] = report["workers"]
    assert "test.slow" in worker["kinds"] and worker["worker_id"]
    assert text.returncode == 0 and "live workers" in text.stdout
    assert worker["worker_id"] in text.stdout
