#!/usr/bin/env python
"""Scenario 5, worker memory: resident set size of the real `python -m worker run` process
(built-in kinds plus a no-op plugin, the fake model server behind it) when idle, at its peak
while draining a load, and once idle again.

    python memory.py --runs 3 --noop 20000 --embeddings 2000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import psutil
import psycopg
from ourworker import (
    HERE,
    LOG_DIR,
    PROJECT,
    bq,
    fresh_database,
    migrate_fresh,
    python,
    spawn,
    stop,
)

from bench import DEFAULT_DSN, summarize
from worker.queries import parse

SQL = parse((HERE / "sql" / "memory.sql").read_text(encoding="utf-8"), "memory.sql")
MIB = 2**20


def sample(pid: int) -> dict[str, float]:
    info = psutil.Process(pid).memory_full_info()
    return {"rss_mb": round(info.rss / MIB, 1), "uss_mb": round(info.uss / MIB, 1)}


def run_once(admin_dsn: str, base_url: str, noop: int, embeddings: int,
             idle_s: float) -> dict[str, Any]:
    dsn = fresh_database(admin_dsn, "bench_memory")
    migrate_fresh(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SQL["seed_course"])
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DATABASE_URL": dsn, "WORKER_PLUGINS": "noop_plugin",
           "PYTHONPATH": str(HERE), "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "x",
           "WORKER_EMBED_DIM": "384", "WORKER_LOG_FORMAT": "json", "WORKER_LOG_LEVEL": "info"}
    proc, _ = spawn([python(), "-m", "worker", "run"], '"worker_ready"', env=env)
    try:
        time.sleep(idle_s)
        idle = sample(proc.pid)
        peak = dict(idle)
        with psycopg.connect(dsn, autocommit=True) as conn:
            t0 = time.monotonic()
            with conn.transaction():
                for start in range(0, noop, 1000):
                    conn.execute(bq("enqueue_many"), {"kind": "bench.noop", "start": start,
                                                      "n": min(1000, noop - start)})
                conn.execute(SQL["insert_questions"], {"start": 1, "n": embeddings})
            while True:
                s = sample(proc.pid)
                peak = {k: max(peak[k], s[k]) for k in peak}
                row = conn.execute(bq("pending")).fetchone()
                if row is not None and row[0] == 0:
                    break
                if time.monotonic() - t0 > 600:
                    raise RuntimeError("load not drained in 600 s")
                time.sleep(0.05)
            load_s = time.monotonic() - t0
        time.sleep(idle_s)
        after = sample(proc.pid)
    finally:
        stop(proc)
    return {"idle": idle, "peak": peak, "after_load": after, "load_s": round(load_s, 2),
            "noop_jobs": noop, "embedding_jobs": embeddings}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", default=DEFAULT_DSN)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--noop", type=int, default=20000)
    ap.add_argument("--embeddings", type=int, default=2000)
    ap.add_argument("--idle", type=float, default=5.0, help="seconds idle before sampling")
    ap.add_argument("--out", default=os.environ.get("BENCH_RESULTS", str(HERE / "results")))
    args = ap.parse_args()
    fake, base_url = spawn([python(), str(HERE / "fake_model.py"), "--delay", "0"], "http")
    runs = []
    try:
        for _ in range(args.runs):
            r = run_once(args.dsn, base_url, args.noop, args.embeddings, args.idle)
            print(f"  [memory] idle {r['idle']['rss_mb']} MB RSS ({r['idle']['uss_mb']} USS), "
                  f"peak {r['peak']['rss_mb']} MB, after {r['after_load']['rss_mb']} MB "
                  f"({r['noop_jobs']} no-op + {r['embedding_jobs']} embedding jobs in "
                  f"{r['load_s']} s)", flush=True)
            runs.append(r)
    finally:
        stop(fake)
    summary = {f"{phase}_{k}": summarize([r[phase][k] for r in runs])
               for phase in ("idle", "peak", "after_load") for k in ("rss_mb", "uss_mb")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory.json").write_text(json.dumps(
        {"command": "python -m worker run", "plugins": "noop_plugin", "project": str(PROJECT),
         "summary": summary, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
