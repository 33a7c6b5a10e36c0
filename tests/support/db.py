"""Test database servers: DATABASE_URL, else testcontainers when Docker answers, else embedded.

A template database is migrated once per session and copied for each test.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from worker import embedded
from worker.db import check_server, connect
from worker.migrate import migrate
from worker.queries import parse

SUPPORT = Path(__file__).resolve().parent
_DROP = pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
_QUERIES = parse((SUPPORT / "queries.sql").read_text(encoding="utf-8"),
                 "tests/support/queries.sql")


def query(name: str) -> bytes:
    """A named query that only the tests read (tests/support/queries.sql)."""
    return _QUERIES[name]


def sql(dsn: str, query: str, params: Any = None) -> list[dict[str, Any]]:
    """Run one statement on its own autocommit connection; the rows, if it returns any."""
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        cur = conn.execute(query.encode(), params)
        return cur.fetchall() if cur.description else []


def one(dsn: str, query: str, params: Any = None) -> Any:
    """The first column of the first row."""
    return next(iter(sql(dsn, query, params)[0].values()))


def docker_available() -> bool:
    if os.environ.get("TEST_DOCKER", "auto") == "off":
        return False
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:  # no client library, no socket, no engine: all mean "no Docker"
        return False
    return True


@contextlib.contextmanager
def server() -> Iterator[str]:
    """Yield an admin DSN of a PostgreSQL server with pgvector available."""
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    if docker_available():
        from testcontainers.postgres import PostgresContainer

        image = os.environ.get("TEST_PGVECTOR_IMAGE", "pgvector/pgvector:pg17")
        with PostgresContainer(image, driver=None) as container:
            yield container.get_connection_url()
        return
    tmp = Path(tempfile.mkdtemp(prefix="worker-tests-"))
    tmp.chmod(0o755)  # the server runs as its own user when we are root
    pgdata = tmp / "pg"
    uri = embedded.acquire(pgdata)
    try:
        yield uri
    finally:
        embedded.release(pgdata)
        shutil.rmtree(tmp, ignore_errors=True)


def dsn_for(admin_dsn: str, dbname: str) -> str:
    return make_conninfo(admin_dsn, dbname=dbname)


def create_database(admin_dsn: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(_DROP.format(pgsql.Identifier(name)))
        if template:
            conn.execute(pgsql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                pgsql.Identifier(name), pgsql.Identifier(template)))
        else:
            conn.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    return dsn_for(admin_dsn, name)


def drop_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(_DROP.format(pgsql.Identifier(name)))


def build_template(admin_dsn: str, name: str) -> None:
    dsn = create_database(admin_dsn, name)
    with connect(dsn) as conn:
        check_server(conn)
        migrate(conn)
        conn.execute((SUPPORT / "schema.sql").read_bytes())
        conn.commit()


def server_major(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.info.server_version // 10000


def pg_dump_for(dsn: str) -> Path | None:
    """A pg_dump of the server's own major version, or None where this machine has none.

    The server names its own binaries (the `pg_config` view); the embedded server's are on
    this machine, a container's are not, so the pg_dump on PATH is the second choice.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            row = conn.execute("SELECT setting FROM pg_config WHERE name = 'BINDIR'").fetchone()
        except psycopg.errors.InsufficientPrivilege:
            row = None
    major = server_major(dsn)
    candidates = [Path(row[0]) / "pg_dump"] if row else []
    if on_path := shutil.which("pg_dump"):
        candidates.append(Path(on_path))
    return next((c for c in candidates if c.is_file() and _major_version(c) == major), None)


def _major_version(binary: Path) -> int | None:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout
    found = re.search(r"\)\s+(\d+)", out)  # "pg_dump (PostgreSQL) 18.1"
    return int(found.group(1)) if found else None


def schema_dump(pg_dump: Path, dsn: str) -> str:
    """`pg_dump --schema-only` of what the migrations own, without what differs per run."""
    out = subprocess.run([str(pg_dump), "--schema-only", "--no-owner", "--exclude-schema=public",
                          "-d", dsn], capture_output=True, text=True, check=True).stdout
    # \restrict keys are random per run; the version comments name the build of the binaries
    unstable = ("\\restrict ", "\\unrestrict ", "-- Dumped from ", "-- Dumped by ")
    return "".join(line for line in out.splitlines(keepends=True)
                   if not line.startswith(unstable))
