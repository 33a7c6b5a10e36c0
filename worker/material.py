"""A course and its study material inserted as an application would: a document holds its
chunks joined, each chunk is a row of its own (the triggers enqueue their embeddings). The
demo and `python -m worker eval explanations` load their sets through it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from worker.queries import q


@dataclass(frozen=True)
class Document:
    title: str
    chunks: Sequence[str]
    summary: str | None = None


def insert_course(conn: psycopg.Connection[dict[str, Any]], user_id: int, title: str,
                  documents: Iterable[Document]) -> tuple[int, int]:
    """The new course's id and how many chunks its documents brought."""
    course = _id(conn.execute(q("material_insert_course"), {"user_id": user_id,
                                                            "title": title}).fetchone())
    chunks = 0
    for doc in documents:
        doc_id = _id(conn.execute(q("material_insert_document"), {
            "course_id": course, "title": doc.title, "content": "\n\n".join(doc.chunks),
            "ai_summary": doc.summary}).fetchone())
        for index, chunk in enumerate(doc.chunks):
            conn.execute(q("material_insert_chunk"), {"document_id": doc_id,
                                                      "chunk_index": index, "content": chunk})
            chunks += 1
    return course, chunks


def _id(row: dict[str, Any] | None) -> int:
    assert row is not None, "an INSERT … RETURNING id returned no row"
    return int(row["id"])
