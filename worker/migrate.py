"""Applies the numbered `sql/migrations/NNNN_name.sql` files in order, each exactly once.

Safe to run twice or from two processes at once: an advisory lock serialises migrators, and
each migration's row is inserted before its body runs, in the same transaction.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import structlog
from psycopg.rows import tuple_row

from worker.config import Settings, load_settings
from worker.errors import MigrationError
from worker.paths import MIGRATIONS_DIR
from worker.queries import q

log = structlog.get_logger("worker.migrate")

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def body(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration numbers in {directory}")
    return found


def settings_variables(settings: Settings | None = None) -> dict[str, str]:
    """Values migrations read with current_setting(): the embedding dimension, so far.
    No settings: the environment's."""
    models = (settings or load_settings()).models
    return {"worker.embedding_dim": str(models.embed_dim)}


def migrate(
    conn: psycopg.Connection[Any],
    directory: Path = MIGRATIONS_DIR,
    variables: dict[str, str] | None = None,
) -> list[Migration]:
    """Apply what is missing in one transaction; returns the migrations applied now.
    `variables` (default: from the settings) are visible to the migrations' SQL."""
    migrations = discover(directory)
    applied_now: list[Migration] = []
    if variables is None:
        variables = settings_variables()
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(q("lock"))
        for name, value in variables.items():
            cur.execute(q("set_variable"), {"name": name, "value": value})
        cur.execute(q("bootstrap"))
        applied = {row[0]: (row[1], row[2]) for row in cur.execute(q("applied")).fetchall()}
        for migration in migrations:
            if migration.version in applied:
                _, checksum = applied[migration.version]
                if checksum != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.path.name} was edited after it was applied; "
                        "add a new migration instead"
                    )
                continue
            cur.execute(
                q("record"),
                {"version": migration.version, "name": migration.name,
                 "checksum": migration.checksum},
            )
            try:
                cur.execute(migration.body.encode())
            except psycopg.Error as exc:
                raise MigrationError(f"{migration.path.name} failed: {exc}") from exc
            applied_now.append(migration)
            log.info("migration_applied", version=migration.version, name=migration.name)
    return applied_now


def pending(conn: psycopg.Connection[Any], directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Migrations not yet applied (read-only; used by the worker's start-up check)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(q("has_migrations_table")).fetchone()
        if not row or not row[0]:
            return discover(directory)
        done = {r[0] for r in cur.execute(q("applied")).fetchall()}
    return [m for m in discover(directory) if m.version not in done]
