"""Adapter interface (copy this file to adapters/<name>.py and fill it in).

The harness (bench.py) never touches queue internals directly; everything goes
through these module-level names.

NAME            str, label used in results.
PENDING_SQL     SQL returning one integer: jobs not yet *finished* (queued + running,
                including completions not yet flushed). The harness polls it to detect
                the end of a drain, and checks it == N after enqueue.
LISTEN_NOTIFY   str, short human note on how the worker learns about new jobs.
CONFIGS         dict[str, dict]: named worker configurations. Must contain "default"
                (library defaults / recommended) and ideally "c10" (concurrency 10).
versions()      -> dict[str, str] of package versions to record.
async install(dsn)
                Create the queue's schema in an EMPTY database (the harness has just
                dropped and recreated the `public` schema).
producer(dsn)   async context manager yielding an object with
                  async enqueue_many(start: int, n: int) -> None   # library batch enqueue
                  async enqueue_one(i: int) -> None                # returns after COMMIT
                Job i must carry the integer i as its argument/payload.
async run_worker(dsn, config: dict, stop: asyncio.Event, ready: callable) -> None
                Run ONE worker in this process until `stop` is set, then shut down
                gracefully and return. Call ready() once connected, right before the
                worker loop starts. The job body must call common.job_started(i) first
                and otherwise do nothing.

Copied from the team's shared harness (shared/bench-peers/adapters/_template.py).
"""

from __future__ import annotations

import asyncio
import contextlib

import common  # noqa: F401 - the job body of a real adapter calls common.job_started

NAME = "template"
PENDING_SQL = "SELECT count(*) FROM my_jobs WHERE status IN ('todo', 'doing')"
LISTEN_NOTIFY = "describe"
CONFIGS = {"default": {}, "c10": {"concurrency": 10}}


def versions():
    return {}


async def install(dsn):
    raise NotImplementedError


class _Producer:
    async def enqueue_many(self, start, n):
        raise NotImplementedError

    async def enqueue_one(self, i):
        raise NotImplementedError


@contextlib.asynccontextmanager
async def producer(dsn):
    yield _Producer()


async def run_worker(dsn, config, stop: asyncio.Event, ready):
    # def job(i): common.job_started(i)
    raise NotImplementedError
