"""Test database servers: DATABASE_URL, else testcontainers when Docker answers, else embedded.

A template database is migrated once per session and copied for each test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from worker import embedded
from worker.db import check_pgvector, connect
from worker.migrate import migrate

SUPPORT = Path(__file__).resolve().parent
_DROP = pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")


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
        check_pgvector(conn)
        migrate(conn)
        conn.execute((SUPPORT / "schema.sql").read_bytes())
        conn.commit()
