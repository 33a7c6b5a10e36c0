"""Shared fixtures: a real PostgreSQL server per session, a fresh database per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support import db as testdb


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    with testdb.server() as admin_dsn:
        yield admin_dsn


@pytest.fixture(scope="session")
def template_db(pg_server: str) -> Iterator[str]:
    name = f"worker_template_{os.getpid()}"
    testdb.build_template(pg_server, name)
    yield name
    testdb.drop_database(pg_server, name)


@pytest.fixture
def dsn(pg_server: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database copied from the session template."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = testdb.create_database(pg_server, name, template=template_db)
    yield url
    testdb.drop_database(pg_server, name)


@pytest.fixture
def empty_dsn(pg_server: str) -> Iterator[str]:
    """A fresh database with nothing in it (for migration tests)."""
    name = f"e_{uuid.uuid4().hex[:12]}"
    url = testdb.create_database(pg_server, name)
    yield url
    testdb.drop_database(pg_server, name)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[dict[str, object]]]:
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as connection:
        yield connection
