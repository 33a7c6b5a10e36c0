"""Prometheus metrics: what this process did, and (on its own path) what the queue holds.

Two registries, so a fleet exports no series twice:

- `/metrics` — this process: jobs by kind and outcome, jobs in flight, model calls by kind,
  outcome and error code, latency, gate wait, tokens, claim failures, listener reconnects,
  build info. Scrape it on every worker.
- `/metrics/queue` — the fleet's queue, read from the database when scraped (never on a
  timer): jobs by kind and state, oldest due pending job, live workers per kind, paused
  kinds. Every worker serves it; scrape it from one target (or a few, deduplicated by the
  rules): the numbers are the database's, not the worker's.

The HTTP side (and /healthz, /readyz) is worker/exposition.py.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from typing import Any

import psycopg
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from worker.db import LazyConnection
from worker.models.settings import LONGEST_TIMEOUT_S
from worker.queries import q

log = structlog.get_logger("worker.metrics")

# up to the longest timeout a model call may have, and for jobs (a built-in kind may take
# two calls' timeouts and a margin) to twice that and more
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
                   240, 480, 900, 1800, LONGEST_TIMEOUT_S)
JOB_BUCKETS = (*LATENCY_BUCKETS, 2 * LONGEST_TIMEOUT_S, 4 * LONGEST_TIMEOUT_S)

PROCESS = CollectorRegistry()

JOBS = Counter("worker_jobs_total",
               "Attempts finished, by kind, outcome (completed, retry, failed, skipped, "
               "snoozed, ...) and error code", ["kind", "outcome", "error_code"],
               registry=PROCESS)
JOB_SECONDS = Histogram("worker_job_duration_seconds", "Handler time per job", ["kind"],
                        buckets=JOB_BUCKETS, registry=PROCESS)
IN_FLIGHT = Gauge("worker_jobs_in_flight", "Jobs this worker has claimed and not finished",
                  ["kind"], registry=PROCESS)
CLAIM_FAILURES = Counter("worker_claim_failures_total",
                         "Claims that failed on the database (the slot retries)", ["kind"],
                         registry=PROCESS)
LISTENER_RECONNECTS = Counter("worker_listener_reconnects_total",
                              "LISTEN connections lost and opened again", registry=PROCESS)
MODEL_CALLS = Counter("worker_model_calls_total",
                      "Model calls by job kind, backend, outcome and error code (429s are "
                      "error_code=rate_limited)", ["kind", "backend", "outcome", "error_code"],
                      registry=PROCESS)
MODEL_SECONDS = Histogram("worker_model_latency_seconds", "Model call latency",
                          ["backend", "model"], buckets=LATENCY_BUCKETS, registry=PROCESS)
GATE_WAIT_SECONDS = Histogram("worker_gate_wait_seconds", "Time waiting for a model gate",
                              ["gate"], buckets=LATENCY_BUCKETS, registry=PROCESS)
TOKENS = Counter("worker_tokens_total", "Model tokens", ["kind", "model", "type"],
                 registry=PROCESS)
BUILD_INFO = Gauge("worker_build_info", "Always 1: the versions this worker runs",
                   ["version", "python", "psycopg", "libpq"], registry=PROCESS)


def _version() -> str:
    try:
        return metadata.version("pg-llm-worker")
    except metadata.PackageNotFoundError:  # a checkout run without installing it
        return "unknown"


BUILD_INFO.labels(_version(), platform.python_version(), psycopg.__version__,
                  str(psycopg.pq.version())).set(1)

_job_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def job_finished(kind: str, outcome: str, error_code: str | None, seconds: float) -> None:
    # labels() takes a lock and builds a key on every call; a job's pair is looked up once
    key = (kind, outcome, error_code or "")
    children = _job_children.get(key)
    if children is None:
        children = _job_children[key] = (JOBS.labels(*key), JOB_SECONDS.labels(kind))
    children[0].inc()
    children[1].observe(seconds)


def in_flight(kind: str, jobs: int) -> None:
    """`jobs` more (or, negative, fewer) of the kind's jobs held by this worker."""
    IN_FLIGHT.labels(kind).inc(jobs)


def claim_failed(kind: str) -> None:
    CLAIM_FAILURES.labels(kind).inc()


def listener_reconnecting() -> None:
    LISTENER_RECONNECTS.inc()


def model_called(kind: str, backend: str, model: str, outcome: str, error_code: str | None,
                 seconds: float, gate: str, gate_wait: float, prompt_tokens: int,
                 completion_tokens: int) -> None:
    MODEL_CALLS.labels(kind, backend, outcome, error_code or "").inc()
    MODEL_SECONDS.labels(backend, model).observe(seconds)
    GATE_WAIT_SECONDS.labels(gate).observe(gate_wait)
    TOKENS.labels(kind, model, "prompt").inc(prompt_tokens)
    TOKENS.labels(kind, model, "completion").inc(completion_tokens)


class QueueCollector(Collector):
    """The queue gauges, read when scraped: one query per scrape (at most one per
    `min_interval` seconds however many scrapers ask), on a connection of its own opened
    on first use. A database that cannot answer gives `worker_queue_up 0` and no other
    series, never a failed scrape."""

    def __init__(self, dsn: str, options: str = "", min_interval: float = 5.0) -> None:
        self._db = LazyConnection(dsn, "worker:metrics", options=options)
        self._min_interval = min_interval
        self._lock = threading.Lock()
        self._cached: tuple[float, list[GaugeMetricFamily]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self._min_interval:
                self._cached = (now, self._read())
            families = self._cached[1]
        yield from families

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # read only when scraped, never at registration

    def close(self) -> None:
        self._db.close()

    def _read(self) -> list[GaugeMetricFamily]:
        try:
            rows = self._db.run(_queue_rows)
        except psycopg.Error as exc:
            log.warning("queue_metrics_failed", error=str(exc))
            return [queue_up(0)]
        return [queue_up(1), *queue_families(*rows)]


def _queue_rows(conn: psycopg.Connection[dict[str, Any]]) -> tuple[list[dict[str, Any]], ...]:
    return (conn.execute(q("stats")).fetchall(),
            conn.execute(q("live_workers_by_kind")).fetchall(),
            conn.execute(q("paused_kinds")).fetchall())


def queue_up(value: int) -> GaugeMetricFamily:
    up = GaugeMetricFamily("worker_queue_up", "1 when the queue gauges could be read")
    up.add_metric([], value)
    return up


def queue_families(stats: list[dict[str, Any]], live: list[dict[str, Any]],
              paused: list[dict[str, Any]]) -> list[GaugeMetricFamily]:
    jobs = GaugeMetricFamily("worker_queue_jobs", "Jobs in the queue by kind and live state",
                             labels=["kind", "state"])
    oldest = GaugeMetricFamily("worker_queue_oldest_pending_seconds",
                               "Age of the oldest due pending job", labels=["kind"])
    for row in stats:
        jobs.add_metric([row["kind"], row["state"]], row["jobs"])
        if row["oldest_pending_age"] is not None:
            oldest.add_metric([row["kind"]], row["oldest_pending_age"].total_seconds())
    workers = GaugeMetricFamily(
        "worker_queue_live_workers",
        "Workers with a heartbeat in the last two minutes that run the kind (0: a kind with "
        "jobs waiting and nobody to run them)", labels=["kind"])
    for row in live:
        workers.add_metric([row["kind"]], row["workers"])
    pauses = GaugeMetricFamily("worker_queue_paused", "1 while the kind is paused",
                               labels=["kind"])
    for row in paused:
        pauses.add_metric([row["kind"]], 1)
    return [jobs, oldest, workers, pauses]
