"""Prometheus metrics, served on 127.0.0.1 when WORKER_METRICS_PORT is set.

Jobs by kind and outcome, job and model latency, gate wait, tokens, and queue depth.
"""

from __future__ import annotations

import asyncio
import errno
from typing import Any

import psycopg
import structlog
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from worker.errors import ConfigError
from worker.pgsession import Session

log = structlog.get_logger("worker.metrics")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

JOBS = Counter("worker_jobs_total", "Jobs finished, by kind and outcome", ["kind", "outcome"])
JOB_SECONDS = Histogram("worker_job_duration_seconds", "Handler time per job", ["kind"],
                        buckets=_LATENCY_BUCKETS)
MODEL_SECONDS = Histogram("worker_model_latency_seconds", "Model call latency",
                          ["backend", "model"], buckets=_LATENCY_BUCKETS)
GATE_WAIT_SECONDS = Histogram("worker_gate_wait_seconds", "Time waiting for a model gate",
                              ["gate"], buckets=_LATENCY_BUCKETS)
TOKENS = Counter("worker_tokens_total", "Model tokens", ["kind", "model", "type"])
QUEUE_DEPTH = Gauge("worker_queue_jobs", "Jobs in the queue by kind and live state",
                    ["kind", "state"])
OLDEST_PENDING = Gauge("worker_queue_oldest_pending_seconds",
                       "Age of the oldest due pending job", ["kind"])


_job_children: dict[tuple[str, str], tuple[Any, Any]] = {}


def job_finished(kind: str, outcome: str, seconds: float) -> None:
    # labels() takes a lock and builds a key on every call; a job's pair is looked up once
    children = _job_children.get((kind, outcome))
    if children is None:
        children = _job_children[kind, outcome] = (JOBS.labels(kind, outcome),
                                                     JOB_SECONDS.labels(kind))
    children[0].inc()
    children[1].observe(seconds)


def model_called(kind: str, backend: str, model: str, seconds: float, gate: str,
                 gate_wait: float, prompt_tokens: int, completion_tokens: int) -> None:
    MODEL_SECONDS.labels(backend, model).observe(seconds)
    GATE_WAIT_SECONDS.labels(gate).observe(gate_wait)
    TOKENS.labels(kind, model, "prompt").inc(prompt_tokens)
    TOKENS.labels(kind, model, "completion").inc(completion_tokens)


def serve(port: int) -> None:
    """Expose /metrics on loopback only; put a proxy in front to publish it."""
    try:
        start_http_server(port, addr="127.0.0.1")
    except OSError as exc:
        reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"failed: {exc}"
        raise ConfigError(f"WORKER_METRICS_PORT={port}: 127.0.0.1:{port} {reason}; choose "
                          "another port, or 0 to serve no metrics") from None
    log.info("metrics_serving", address=f"127.0.0.1:{port}")


async def refresh_queue_depth(dsn: str, options: str, every: float = 10.0) -> None:
    """Keep the queue gauges current from queue.stats, on a connection of its own."""
    session = Session(dsn, "worker:metrics", options=options)
    try:
        while True:
            try:
                _set_queue_depth(await session.run("stats"))
            except psycopg.Error as exc:
                log.warning("metrics_refresh_failed", error=str(exc))
            await asyncio.sleep(every)
    finally:
        await session.aclose()


def _set_queue_depth(rows: list[dict[str, Any]]) -> None:
    QUEUE_DEPTH.clear()
    OLDEST_PENDING.clear()
    for row in rows:
        QUEUE_DEPTH.labels(row["kind"], row["state"]).set(row["jobs"])
        if row["oldest_pending_age"] is not None:
            OLDEST_PENDING.labels(row["kind"]).set(row["oldest_pending_age"].total_seconds())
