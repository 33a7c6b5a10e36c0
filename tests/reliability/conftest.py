"""Fixtures of the reliability suite: the run size (reduced by default, full with
CHAOS_FULL=1), a fixed and recorded random seed, worker fleets and the fake model server.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.support import FULL, SEED, Fleet, OwnServer, login_dsn
from tests.support import db as testdb
from tests.support import fake_openai as fake
from tests.support.vectors import responder
from worker import embedded
from worker.db import check_server, connect
from worker.migrate import migrate


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos: reliability scenario; reduced size by default, full with "
                   "CHAOS_FULL=1 (make chaos)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # the size shows in the test id: test_kill_loop[reduced] or test_kill_loop[full]
    if "size" in metafunc.fixturenames:
        metafunc.parametrize("size", ["full" if FULL else "reduced"])


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    print(f"chaos seed: {SEED} (CHAOS_SEED={SEED} replays this run)")
    return SEED


@pytest.fixture
def rng(seed: int, request: pytest.FixtureRequest) -> random.Random:
    """One stream per test, so adding a test does not change the others' runs."""
    return random.Random(f"{seed}:{request.node.originalname}")


@pytest.fixture
def worker_dsn(dsn: str) -> str:
    """The test database as the least-privilege login (a member of llm_worker)."""
    return login_dsn(dsn)


@pytest.fixture
def fleets() -> Iterator[Callable[..., Fleet]]:
    """Make fleets of worker processes; every process is stopped by its PID at the end."""
    made: list[Fleet] = []

    def make(dsn: str, env: dict[str, str] | None = None, **kwargs: Any) -> Fleet:
        fleet = Fleet(dsn, env, **kwargs)
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        fleet.stop_all()


@pytest.fixture
def model() -> Iterator[fake.FakeOpenAI]:
    with fake.FakeOpenAI() as server:
        server.fallback["embeddings"] = responder()
        yield server


@pytest.fixture
def own_server() -> Iterator[OwnServer]:
    tmp = Path(tempfile.mkdtemp(prefix="chaos-pg-"))
    tmp.chmod(0o755)  # the server runs as its own user when we are root
    pgdata = tmp / "pg"
    uri = embedded.acquire(pgdata)
    try:
        dsn = testdb.create_database(uri, "chaos")
        with connect(dsn) as conn:
            check_server(conn)
            migrate(conn)
            conn.execute((Path(testdb.SUPPORT) / "schema.sql").read_bytes())
            conn.commit()
        yield OwnServer(pgdata, dsn)
    finally:
        embedded.release(pgdata)
        embedded.stop_server(pgdata)  # in case a failed restart left it in an odd state
        shutil.rmtree(tmp, ignore_errors=True)
