"""Which database to use and how to connect: DATABASE_URL, else the embedded server.

Also the start-up checks every entry point runs (pgvector present, schema migrated), and
pgvector's types on the connections that carry vectors.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from pgvector.psycopg import register_vector_async
from psycopg.rows import dict_row
from psycopg.types import TypeInfo

from worker import embedded
from worker.errors import ConfigError
from worker.queries import q
from worker.systemd import under_systemd

if TYPE_CHECKING:
    # worker.config imports the model package, which connects through this module
    from worker.config import Settings


@contextlib.contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """The DSN to use for the duration of the block, starting the embedded server if needed."""
    if settings.database_url is not None:
        yield settings.database_url.get_secret_value()
        return
    if under_systemd() and "embedded_pgdata" not in settings.model_fields_set:
        # a unit whose EnvironmentFile lost the variable would otherwise start a database of
        # its own beside the installation and work on it as if nothing were wrong
        raise ConfigError("no DATABASE_URL under systemd: set DATABASE_URL in the unit's "
                          "EnvironmentFile (or WORKER_EMBEDDED_PGDATA to run the embedded "
                          "server on purpose)")
    with embedded.server(settings.embedded_pgdata) as uri:
        yield uri


def connect(dsn: str, **kwargs: Any) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(dsn, row_factory=dict_row, **kwargs)


T = TypeVar("T")


class LazyConnection:
    """One autocommit connection for a thread that asks the database now and then (the
    metrics endpoint's scrapes, /readyz): opened on first use, one caller at a time, and
    dropped after any database error, so the next call opens a fresh one."""

    def __init__(self, dsn: str, application_name: str, *, options: str = "",
                 connect_timeout: int = 5) -> None:
        self._kwargs: dict[str, Any] = {"autocommit": True, "options": options,
                                        "application_name": application_name,
                                        "connect_timeout": connect_timeout}
        self._dsn = dsn
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[dict[str, Any]] | None = None

    def run(self, work: Callable[[psycopg.Connection[dict[str, Any]]], T]) -> T:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = connect(self._dsn, **self._kwargs)
                return work(self._conn)
            except psycopg.Error:
                self._drop()
                raise

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


async def aconnect(dsn: str, **kwargs: Any) -> psycopg.AsyncConnection[dict[str, Any]]:
    return await psycopg.AsyncConnection.connect(dsn, row_factory=dict_row, **kwargs)


async def register_vector_types(conn: psycopg.AsyncConnection[Any]) -> None:
    """pgvector's adapter on this connection: a `pgvector.Vector` parameter travels as binary
    and a vector column reads back as one. A database without the extension yet (before its
    first migration) is left as it is."""
    if await TypeInfo.fetch(conn, "vector") is not None:
        await register_vector_async(conn)


def check_server(conn: psycopg.Connection[dict[str, Any]]) -> None:
    """The server can hold this schema: UTF8 text and the pgvector extension."""
    row = conn.execute(q("server_encoding")).fetchone()
    if row and row["encoding"] != "UTF8":
        raise ConfigError(
            f"the database's encoding is {row['encoding']}; the worker needs a UTF8 database "
            "(text from the models and the fingerprints of what was embedded or explained "
            "assume it): CREATE DATABASE … ENCODING 'UTF8' TEMPLATE template0"
        )
    row = conn.execute(q("pgvector_available")).fetchone()
    if not row or not row["available"]:
        raise ConfigError(
            "this PostgreSQL server lacks the pgvector extension ('vector'); install pgvector "
            "on it (e.g. the pgvector/pgvector image) or unset DATABASE_URL to use the "
            "embedded server"
        )
