"""One evaluation run: the worker itself (embedding and explanation kinds, the settings' model,
one prompt version) over the labelled set in a scratch database, then what it did, per
question. The explanation job kind is the production one, not a copy of it."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from worker.config import Settings
from worker.db import aconnect
from worker.errors import WorkerError
from worker.evaluation.labelled_set import LabelledSet
from worker.evaluation.scratch import Loaded, prepare, scratch_database
from worker.kinds import embedding, explanation
from worker.queries import q
from worker.runner import assembled_worker

# how often the run looks at the scratch queue, and reports progress (seconds)
POLL, PROGRESS = 0.5, 30.0


@dataclass(frozen=True)
class RunResult:
    """What one model and prompt version did: a row per question (eval_explanations) and the
    seconds from the first request to the last explanation job's end."""

    rows: list[dict[str, Any]]
    question_ids: dict[str, int]
    wall_s: float


def run_settings(settings: Settings, version: int, verify: str) -> Settings:
    """The settings of one run: only the kinds it needs, the prompt version under test and
    the verification mode; everything else (model, evidence, timeouts) as configured."""
    prompts = settings.prompts.model_copy(
        update={"per_kind": {**settings.prompts.per_kind, explanation.KIND: str(version)}})
    return settings.model_copy(update={
        "kinds": [embedding.KIND, explanation.KIND], "explanation_verify": verify,
        "prompts": prompts, "poll_interval": min(settings.poll_interval, POLL)})


def evaluate(settings: Settings, live_dsn: str, labelled: LabelledSet, label: str
             ) -> RunResult:
    """Run the set through the worker in a scratch database on the live database's server;
    the scratch database is dropped afterwards, whatever happens."""
    with scratch_database(live_dsn) as dsn:
        loaded = prepare(dsn, settings, labelled)
        return asyncio.run(_drive(settings, dsn, loaded, label))


async def _drive(settings: Settings, dsn: str, loaded: Loaded, label: str) -> RunResult:
    async with assembled_worker(settings, dsn) as worker, \
            await aconnect(dsn, autocommit=True) as conn:
        task = asyncio.create_task(worker.run())
        try:
            await worker.ready.wait()
            await _drained(conn, task, embedding.KIND, f"{label}: embeddings")
            started = time.monotonic()
            for qid in loaded.question_ids.values():
                await conn.execute(q("eval_request_explanation"), {"question_id": qid})
            await _drained(conn, task, explanation.KIND, f"{label}: explanations")
            wall = time.monotonic() - started
        finally:
            worker.stop()
            await task
        rows = await (await conn.execute(q("eval_explanations"),
                                         {"course_id": loaded.course_id})).fetchall()
    return RunResult(rows, loaded.question_ids, wall)


async def _drained(conn: psycopg.AsyncConnection[dict[str, Any]], worker: asyncio.Task[None],
                   kind: str, label: str) -> None:
    """Wait until no job of `kind` is pending in the scratch queue; progress on stderr. A
    worker that stopped on its own ends the wait with its error."""
    started, shown = time.monotonic(), 0.0
    while True:
        if worker.done():
            worker.result()
            raise WorkerError("the worker stopped before the evaluation's jobs were done")
        row = await (await conn.execute(q("eval_pending"), {"kind": kind})).fetchone()
        if not row or row["pending"] == 0:
            return
        elapsed = time.monotonic() - started
        if elapsed - shown >= PROGRESS:
            print(f"  … {label}: {row['pending']} to go ({elapsed:.0f} s)", file=sys.stderr,
                  flush=True)
            shown = elapsed
        await asyncio.sleep(POLL)
