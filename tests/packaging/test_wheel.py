"""The wheel as an operator installs it: built with pip, installed into a fresh venv with the
deployment constraints, then migrate an empty database and run one job, outside the checkout.

Not part of `make test` (it builds and installs, about a minute); `.ci/run` runs it with
`pytest tests/packaging`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import venv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import fake_openai as fake
from tests.support.db import one, sql
from tests.support.procs import ROOT, WorkerProcess, wait_for
from tests.support.vectors import responder

CONSTRAINTS = ROOT / "deploy" / "constraints.txt"


@dataclass(frozen=True)
class Installed:
    wheel: Path
    bin: Path
    site_packages: Path
    home: Path  # a working directory outside the checkout, with its own state directory

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("WORKER_", "PROMPT_")) and k not in (
                   "DATABASE_URL", "PYTHONPATH", "STATE_DIRECTORY", "INVOCATION_ID")}
        env["XDG_STATE_HOME"] = str(self.home / "state")
        env.update(extra)
        return env

    def cli(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bin / "pg-llm-worker"), *args], cwd=self.home,
                              env=self.env(**extra), capture_output=True, text=True, timeout=180)


def _run(*command: str | Path) -> None:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _clean_copy(target: Path) -> Path:
    """The files git knows (committed or not ignored): no stale build/ or .data/ rides along."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("wheel")
    base.chmod(0o755)  # the embedded server runs as its own user when we are root
    dist = base / "dist"
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", dist,
         _clean_copy(base / "src"))
    wheel = next(dist.glob("pg_llm_worker-*.whl"))
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    _run(bin_dir / "python", "-m", "pip", "install", "--quiet", "-c", CONSTRAINTS, wheel)
    purelib = subprocess.run(
        [str(bin_dir / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True).stdout.strip()
    home = base / "home"
    home.mkdir()
    installed = Installed(wheel, bin_dir, Path(purelib), home)
    yield installed
    installed.cli("db", "stop")  # only if a failing test left the server running


def test_the_wheel_ships_the_sql_the_prompts_and_the_license(installed: Installed) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    assert "worker/_data/sql/migrations/0001_queue.sql" in names
    assert "worker/_data/sql/queries/queue.sql" in names
    assert "worker/_data/prompts/explanation/v2.yaml" in names
    assert "worker/_data/data/eval/explanations_ko.yaml" in names
    assert "worker/dashboard/templates/base.html" in names  # the dashboard's package data
    assert "worker/dashboard/static/style.css" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert not any(name.startswith(("tests/", "demo/", "bench/")) for name in names)


def test_the_installed_worker_migrates_and_runs_a_job_outside_the_checkout(
        installed: Installed) -> None:
    found = subprocess.run([str(installed.bin / "python"), "-c",
                            "import worker; print(worker.__file__)"],
                           cwd=installed.home, env=installed.env(), capture_output=True,
                           text=True, check=True).stdout
    assert found.startswith(str(installed.site_packages))

    started = installed.cli("db", "start")
    assert started.returncode == 0, started.stderr
    dsn = started.stdout.strip().splitlines()[-1]
    migrated = installed.cli("migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "applied 0001_queue" in migrated.stdout
    # the embedded server's data lives in the state directory, not in site-packages
    assert (installed.home / "state" / "pg-llm-worker" / "pg").is_dir()
    assert not (installed.site_packages / ".data").exists()

    user = sql(dsn, "INSERT INTO app.users (email) VALUES ('a@b') RETURNING id")[0]["id"]
    course = sql(dsn, "INSERT INTO app.courses (user_id, title) VALUES (%s, 'c') RETURNING id",
                 (user,))[0]["id"]
    question = sql(dsn, "INSERT INTO app.questions (course_id, question_text) "
                        "VALUES (%s, '변압기의 원리') RETURNING id", (course,))[0]["id"]
    with fake.FakeOpenAI() as server:
        server.fallback["embeddings"] = responder()
        proc = WorkerProcess(None, plugins="", command=(str(installed.bin / "pg-llm-worker"),),
                             cwd=installed.home, env={
                                 **installed.env(), "OPENAI_BASE_URL": server.base_url,
                                 "OPENAI_API_KEY": "test-key", "WORKER_EMBED_MODEL": "fake-embed",
                                 "WORKER_KINDS": "embedding"})
        try:
            proc.wait_ready(timeout=60)
            wait_for(lambda: one(dsn, "SELECT embedding_status = 'ready' FROM app.questions "
                                      "WHERE id = %s", (question,)),
                     timeout=60, message="the question's embedding")
            proc.signal(signal.SIGTERM)
            assert proc.wait() == 0, proc.output()
        finally:
            proc.stop()
            stopped = installed.cli("db", "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
