"""The scratch database an evaluation runs in: created on the configured server next to the
live database, migrated, loaded with the labelled set, and dropped when the run ends."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from worker.config import Settings
from worker.db import check_server, connect
from worker.errors import ConfigError
from worker.evaluation.labelled_set import LabelledSet
from worker.material import Document, insert_course
from worker.migrate import migrate, settings_variables
from worker.queries import q

SCRATCH_DB = "worker_eval"  # the name in sql/queries/evaluation.sql


@dataclass(frozen=True)
class Loaded:
    """The labelled set as rows of the scratch database."""

    course_id: int
    question_ids: dict[str, int]  # the set's question id -> app.questions.id
    chunks: int


@contextlib.contextmanager
def scratch_database(live_dsn: str) -> Iterator[str]:
    """A new, empty database on the live database's server, dropped on the way out. The live
    database itself only issues the CREATE and the DROP."""
    if conninfo_to_dict(live_dsn).get("dbname") == SCRATCH_DB:
        raise ConfigError(f"the configured database is called {SCRATCH_DB!r}, the name the "
                          "evaluation gives its scratch database; use another one")
    with connect(live_dsn, autocommit=True) as admin:
        try:
            admin.execute(q("eval_create_database"))
        except psycopg.errors.DuplicateDatabase:
            raise ConfigError(f"database {SCRATCH_DB!r} exists: another evaluation is running "
                              "on this server, or one was killed; if none runs, "
                              f"DROP DATABASE {SCRATCH_DB}") from None
        except psycopg.errors.InsufficientPrivilege:
            raise ConfigError("the evaluation creates a scratch database next to the live "
                              "one, and this role may not (it needs CREATEDB)") from None
    try:
        yield make_conninfo(live_dsn, dbname=SCRATCH_DB)
    finally:
        with connect(live_dsn, autocommit=True) as admin:
            admin.execute(q("eval_drop_database"))


def prepare(dsn: str, settings: Settings, labelled: LabelledSet) -> Loaded:
    """Migrate the scratch database (with the settings' embedding dimension) and load the set
    as an application would; the insert triggers enqueue the embeddings."""
    with connect(dsn) as conn:
        check_server(conn)
        migrate(conn, variables=settings_variables(settings))
    with connect(dsn, autocommit=True) as conn:
        return _load(conn, labelled)


def _load(conn: psycopg.Connection[dict[str, Any]], labelled: LabelledSet) -> Loaded:
    def one(name: str, **params: Any) -> int:
        row = conn.execute(q(name), params).fetchone()
        assert row is not None, f"{name} returned no id"
        return int(row["id"])

    course, chunks = insert_course(
        conn, one("eval_insert_user"), labelled.course,
        (Document(doc.title, doc.chunks, doc.summary) for doc in labelled.documents))
    ids = {item.id: one("eval_insert_question", course_id=course,
                        question_text=item.question_text, correct_choice=item.answer,
                        subject=item.topic,
                        **{f"choice_{n}": c for n, c in enumerate(item.choices, 1)})
           for item in labelled.questions}
    return Loaded(course, ids, chunks)
