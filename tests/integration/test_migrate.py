"""Migrations: in order, once, safe from two processes at once, the reference schema every
time."""

from __future__ import annotations

import difflib
import os
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

REFERENCE = testdb.SUPPORT / "schema_reference.sql"
_HEADER = ("-- pg_dump --schema-only of a freshly migrated database, PostgreSQL {major}.\n"
           "-- Written by `REGENERATE_SCHEMA=1 pytest tests/integration/test_migrate.py`.\n\n")
_MIGRATE = "import sys; from worker.db import connect; from worker.migrate import migrate; " \
           "migrate(connect(sys.argv[1]))"


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


def _fresh_schema(pg_server: str, pg_dump: Path) -> str:
    name = f"m_{uuid.uuid4().hex[:10]}"
    dsn = testdb.create_database(pg_server, name)
    try:
        with connect(dsn) as conn:
            migrate(conn)
        return testdb.schema_dump(pg_dump, dsn)
    finally:
        testdb.drop_database(pg_server, name)


def test_a_fresh_migrate_gives_the_reference_schema_every_time(pg_server: str) -> None:
    """Two fresh migrates dump the same schema, and it is the one in
    tests/support/schema_reference.sql. After adding a migration, regenerate the reference
    with `REGENERATE_SCHEMA=1 pytest tests/integration/test_migrate.py` and review its diff."""
    pg_dump = testdb.pg_dump_for(pg_server)
    if pg_dump is None:
        pytest.skip("no pg_dump of the server's major version on this machine")
    first, second = (_fresh_schema(pg_server, pg_dump) for _ in range(2))
    assert first == second, "two fresh migrates dumped different schemas"
    dumped = _HEADER.format(major=testdb.server_major(pg_server)) + first
    if os.environ.get("REGENERATE_SCHEMA"):
        REFERENCE.write_text(dumped, encoding="utf-8")
        return
    reference = REFERENCE.read_text(encoding="utf-8")
    if reference.splitlines()[0] != dumped.splitlines()[0]:
        pytest.skip(f"{REFERENCE.name} was dumped from another major version of PostgreSQL")
    diff = difflib.unified_diff(reference.splitlines(keepends=True),
                                dumped.splitlines(keepends=True),
                                str(REFERENCE.relative_to(ROOT)), "a fresh migrate")
    assert dumped == reference, "".join(diff)


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
