"""Question and document-chunk embeddings: one model call for a whole claimed batch.

A row's vector is written only while its text is still the text that was embedded.
"""

from __future__ import annotations

from typing import Any, Literal

import psycopg
from pgvector import Vector
from pydantic import BaseModel, ConfigDict, StrictInt

from worker.config import Settings
from worker.dberrors import connection_lost
from worker.errors import FinalFailure, InputChanged, SkipJob
from worker.job import Job, Outcome
from worker.models.client import ModelClient
from worker.models.errors import ModelFinal
from worker.models.types import CallContext
from worker.queries import q
from worker.registry import JobConnection, JobKind

KIND = "embedding"
# longer inputs are cut: bge-m3 reads about 8k tokens, and a 1 MB paste must not sink a batch
MAX_CHARS = 8000
_SOURCES = {"question": "write_question_embedding", "chunk": "write_chunk_embedding"}
_FAILED = {"question": "mark_question_embedding_failed", "chunk": "mark_chunk_embedding_failed"}
# e5-style models embed a search query and a passage differently: a question is what one
# searches with (for material and for similar questions), a chunk is what is found
ROLES = {"question": "query", "chunk": "passage"}

Result = dict[str, Any] | BaseException | None


class EmbeddingArgs(BaseModel):
    """The payload: which row to embed."""

    model_config = ConfigDict(frozen=True)

    source: Literal["question", "chunk"]
    id: StrictInt


def _target(job: Job) -> tuple[str, int]:
    args: EmbeddingArgs = job.args
    return args.source, args.id


class Embeddings:
    def __init__(self, client: ModelClient, split_roles: bool = False) -> None:
        self.client = client
        # one model call per role when the server distinguishes query and passage
        self.split_roles = split_roles

    async def run(self, conn: JobConnection, jobs: list[Job]) -> dict[int, Result]:
        results: dict[int, Result] = {}
        targets: dict[int, tuple[str, int]] = {}
        for job in jobs:
            targets[job.id] = _target(job)
        cur = await conn.execute(q("embedding_inputs"), {
            "question_ids": [i for s, i in targets.values() if s == "question"],
            "chunk_ids": [i for s, i in targets.values() if s == "chunk"],
        })
        rows = {(r["source"], r["id"]): r for r in await cur.fetchall()}

        todo: list[tuple[Job, str, str, bool]] = []
        for job in jobs:
            if job.id not in targets:
                continue
            source, row_id = targets[job.id]
            row = rows.get((source, row_id))
            if row is None:
                results[job.id] = SkipJob("missing", f"{source} {row_id} does not exist")
            elif row["deleted"]:
                results[job.id] = SkipJob("deleted", f"{source} {row_id} was deleted")
            elif not (row["text"] or "").strip():
                results[job.id] = FinalFailure("bad_input", f"{source} {row_id} has no text")
            else:
                text = row["text"]
                todo.append((job, text[:MAX_CHARS], row["text_md5"], len(text) > MAX_CHARS))
        if not todo:
            return results

        # one model call for the batch (per role, if roles matter); the accounting row is
        # filed under the first job of the call
        vectors: dict[int, tuple[tuple[float, ...] | BaseException, str]] = {}
        groups = ({role: [t for t in todo if ROLES[targets[t[0].id][0]] == role]
                   for role in ("query", "passage")} if self.split_roles else {None: todo})
        for role, group in groups.items():
            if group:
                got = await self._embed([text for _, text, _, _ in group], group[0][0], role)
                vectors.update(zip([job.id for job, *_ in group], got, strict=True))
        # rows are written in key order, so two writers of the same rows never deadlock
        for job, text, text_md5, cut in sorted(todo, key=lambda t: targets[t[0].id]):
            vector, model = vectors[job.id]
            if isinstance(vector, BaseException):
                results[job.id] = vector
                continue
            results[job.id] = await self._write(conn, targets[job.id], vector, model, text_md5,
                                                {"chars": len(text), "cut": cut,
                                                 "batch": len(todo), "model": model})
        return results

    async def _embed(
        self, texts: list[str], first: Job, role: str | None
    ) -> list[tuple[tuple[float, ...] | BaseException, str]]:
        ctx = CallContext.for_job(first)
        try:
            result = await self.client.embed(texts, ctx, role)
        except ModelFinal as exc:
            if exc.code != "bad_request" or len(texts) == 1:
                raise
            # the server refused the whole batch: embed one by one so a bad row fails alone
            single: list[tuple[tuple[float, ...] | BaseException, str]] = []
            for text in texts:
                try:
                    one = await self.client.embed([text], ctx, role)
                    single.append((one.vectors[0], one.model))
                except ModelFinal as refused:
                    single.append((refused, ""))
            return single
        return [(vector, result.model) for vector in result.vectors]

    async def _write(self, conn: JobConnection, target: tuple[str, int], vector: tuple[float, ...],
                     model: str, text_md5: str, info: dict[str, Any]) -> Result:
        source, row_id = target
        try:
            async with conn.transaction():
                cur = await conn.execute(q(_SOURCES[source]), {
                    "id": row_id, "embedding": Vector(list(vector)),
                    "model": model, "text_md5": text_md5,
                })
                written = cur.rowcount == 1
        except psycopg.errors.DataException as exc:
            return FinalFailure("bad_vector", f"the vector does not fit the column: {exc}")
        except psycopg.Error as exc:
            if connection_lost(conn, exc):
                raise
            # e.g. a row lock the application holds past lock_timeout, or a deadlock: this
            # row's job fails (db_conflict, retried) and the rest of the batch is written
            return exc
        if written:
            return {"source": source, "id": row_id, "dimensions": len(vector), **info}
        cur = await conn.execute(q("embedding_inputs"), {
            "question_ids": [row_id] if source == "question" else [],
            "chunk_ids": [row_id] if source == "chunk" else [],
        })
        row = await cur.fetchone()
        if row is None or row["deleted"]:
            return SkipJob("deleted", f"{source} {row_id} was deleted while it was embedded")
        return InputChanged("input_changed",
                            f"{source} {row_id} was edited while it was embedded; "
                            "embedding the new text")

    async def on_final_failure(self, conn: JobConnection, job: Job, outcome: Outcome) -> None:
        if outcome.status != "failed":
            return
        if job.args is None:  # refused as bad_payload: no row to mark
            return
        source, row_id = _target(job)
        await conn.execute(q(_FAILED[source]), {"id": row_id})


def kind(settings: Settings, client: ModelClient) -> JobKind:
    """The embedding kind: a claim's batch is one model request (WORKER_EMBED_BATCH_SIZE),
    so its job timeout covers reading the batch, the model round trips and the writes."""
    models = settings.models
    embeddings = Embeddings(client, models.embed_input_type)
    return JobKind(KIND, batch_handler=embeddings.run, payload_model=EmbeddingArgs,
                   on_final_failure=embeddings.on_final_failure,
                   batch_size=models.embed_batch_size, concurrency=2,
                   timeout=2 * models.timeout_for(KIND) + 10)
