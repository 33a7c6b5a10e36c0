#!/usr/bin/env python
"""Postgres job-queue benchmark harness: drain throughput and pickup latency.

Copied from the team's shared harness (shared/bench-peers/bench.py) so the project is
self-contained; changes: worker RSS sampling, BENCH_RESULTS output folder, type hints.

    python bench.py drain   --adapter procrastinate_q --configs default,c10 --n 20000 --runs 3
    python bench.py latency --adapter pgqueuer_q --config default --n 200 --interval 0.02 --runs 3

--adapter is a module name under adapters/ or a path to an adapter .py file
(interface: adapters/_template.py). See README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib
import importlib.util
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

DEFAULT_DSN = os.environ.get("BENCH_DSN", "postgresql://postgres:@/postgres?host=.bench/pgdata")
DEFAULT_PGDATA = os.environ.get("BENCH_PGDATA", ".bench/pgdata")


# ----------------------------------------------------------------------------- helpers
def load_adapter(spec: str) -> Any:
    if spec.endswith(".py"):
        path = Path(spec).resolve()
        s = importlib.util.spec_from_file_location(path.stem, path)
        assert s is not None and s.loader is not None
        mod: ModuleType = importlib.util.module_from_spec(s)
        s.loader.exec_module(mod)
        return mod
    return importlib.import_module(f"adapters.{spec}")


def dsn_with_db(dsn: str, dbname: str) -> str:
    u = urlsplit(dsn)
    return urlunsplit((u.scheme, u.netloc, "/" + dbname, u.query, u.fragment))


def pconnect(dsn: str) -> Any:
    import psycopg

    return psycopg.connect(dsn, autocommit=True)


def scalar(conn: Any, sql: str) -> Any:
    return conn.execute(sql).fetchone()[0]


def prepare_db(admin_dsn: str, adapter: Any) -> str:
    """Create database bench_<NAME> if needed, wipe its public schema, install the queue schema."""
    dbname = "bench_" + "".join(c if c.isalnum() else "_" for c in adapter.NAME.lower())
    with pconnect(admin_dsn) as c:
        if not scalar(c, f"SELECT count(*) FROM pg_database WHERE datname = '{dbname}'"):
            c.execute(f'CREATE DATABASE "{dbname}"')
    dsn = dsn_with_db(admin_dsn, dbname)
    with pconnect(dsn) as c:
        c.execute("DROP SCHEMA IF EXISTS public CASCADE")
        c.execute("CREATE SCHEMA public")
    asyncio.run(adapter.install(dsn))
    return dsn


def server_info(dsn: str) -> dict:
    with pconnect(dsn) as c:
        keys = [
            "server_version",
            "synchronous_commit",
            "fsync",
            "shared_buffers",
            "max_connections",
        ]
        return {k: scalar(c, f"SHOW {k}") for k in keys}


def pg_cpu_snapshot(pgdata: str) -> dict[int, float]:
    """user+sys CPU seconds of the postmaster and all its children (needs psutil + permission)."""
    try:
        import psutil

        pid = int(Path(pgdata, "postmaster.pid").read_text().split()[0])
        pm = psutil.Process(pid)
        snap: dict[int, float] = {}
        for p in [pm, *pm.children(recursive=True)]:
            try:
                t = p.cpu_times()
                snap[p.pid] = t.user + t.system
            except psutil.Error:
                pass
        return snap
    except Exception:  # no psutil or no permission: CPU accounting is best effort
        return {}


def cpu_delta(a: dict[int, float], b: dict[int, float]) -> float | None:
    if not b:
        return None
    return round(sum(v - a.get(pid, 0.0) for pid, v in b.items()), 3)


def proc_cpu(pid: int) -> dict[str, float] | None:
    try:
        import psutil

        t = psutil.Process(pid).cpu_times()
        return {
            "user": round(t.user, 3),
            "sys": round(t.system, 3),
            "total": round(t.user + t.system, 3),
        }
    except Exception:  # the process may be gone
        return None


def proc_rss_mb(pid: int) -> float | None:
    """Resident set size of a process in MiB (added for the memory table)."""
    try:
        import psutil

        return round(psutil.Process(pid).memory_info().rss / 2**20, 1)
    except Exception:  # the process may be gone
        return None


def pct(sorted_vals: list[float], p: float) -> float:
    """nearest-rank percentile"""
    k = max(0, min(len(sorted_vals) - 1, math.ceil(p / 100 * len(sorted_vals)) - 1))
    return sorted_vals[k]


def summarize(vals: list[Any]) -> dict[str, Any] | None:
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return {
        "median": round(statistics.median(vals), 4),
        "min": round(min(vals), 4),
        "max": round(max(vals), 4),
        "runs": [round(v, 4) for v in vals],
    }


def start_worker(
    adapter_spec: str, dsn: str, config: dict[str, Any], stamp_file: str | None = None
) -> tuple[subprocess.Popen[str], float, float]:
    cmd = [
        sys.executable,
        str(HERE / "worker_main.py"),
        "--adapter",
        adapter_spec,
        "--dsn",
        dsn,
        "--config",
        json.dumps(config),
    ]
    if stamp_file:
        cmd += ["--stamp-file", stamp_file]
    t_spawn = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=HERE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        proc.kill()
        raise RuntimeError(f"worker did not start (got {line!r}); cmd={cmd}")
    return proc, t_spawn, float(line.split()[1])


def stop_worker(proc: subprocess.Popen[str], timeout: float = 60) -> int | str:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return "killed"
    return proc.returncode


def save(kind: str, adapter: Any, payload: dict[str, Any], label: str | None) -> None:
    out = Path(os.environ.get("BENCH_RESULTS", HERE / "results"))
    out.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{stamp}_{kind}_{adapter.NAME}{'_' + label if label else ''}.json"
    (out / name).write_text(json.dumps(payload, indent=2))
    print(f"-> {out / name}")


def meta(args: argparse.Namespace, adapter: Any, dsn: str) -> dict[str, Any]:
    return {
        "adapter": adapter.NAME,
        "versions": adapter.versions(),
        "listen_notify": adapter.LISTEN_NOTIFY,
        "server": server_info(dsn),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "label": args.label,
        "argv": sys.argv,
        "when": dt.datetime.now().isoformat(timespec="seconds"),
    }


# ----------------------------------------------------------------------------- drain
async def enqueue_all(adapter: Any, dsn: str, n: int, chunk: int) -> float:
    async with adapter.producer(dsn) as p:
        t0 = time.perf_counter()
        for start in range(0, n, chunk):
            await p.enqueue_many(start, min(chunk, n - start))
        return time.perf_counter() - t0


def drain_once(args: argparse.Namespace, adapter: Any, cfg_name: str) -> dict[str, Any]:
    config = adapter.CONFIGS[cfg_name]
    dsn = prepare_db(args.dsn, adapter)
    enq_s = asyncio.run(enqueue_all(adapter, dsn, args.n, args.chunk))
    with pconnect(dsn) as c:
        pending = scalar(c, adapter.PENDING_SQL)
        assert pending == args.n, f"expected {args.n} pending after enqueue, got {pending}"
        c.execute("CHECKPOINT")
        pg0 = pg_cpu_snapshot(args.pgdata)
        proc, t_spawn, t_ready = start_worker(args.adapter, dsn, config)
        wcpu0 = proc_cpu(proc.pid)
        rss_ready = proc_rss_mb(proc.pid)
        rss_peak = rss_ready or 0.0
        deadline = time.time() + args.timeout
        while True:
            time.sleep(args.poll)
            rss_peak = max(rss_peak, proc_rss_mb(proc.pid) or 0.0)
            left = scalar(c, adapter.PENDING_SQL)
            if left == 0:
                t_done = time.time()
                break
            if time.time() > deadline or proc.poll() is not None:
                stop_worker(proc)
                raise RuntimeError(
                    f"drain did not finish: {left} left, worker rc={proc.returncode}"
                )
        wcpu = proc_cpu(proc.pid)
        if wcpu and wcpu0:  # exclude interpreter start-up / imports / connect
            wcpu = {k: round(wcpu[k] - wcpu0[k], 3) for k in wcpu} | {"incl_startup": wcpu["total"]}
        pg_cpu = cpu_delta(pg0, pg_cpu_snapshot(args.pgdata))
    rc = stop_worker(proc)
    drain_s = t_done - t_ready
    r = {
        "config": cfg_name,
        "worker_options": config,
        "n": args.n,
        "enqueue_chunk": args.chunk,
        "enqueue_s": round(enq_s, 4),
        "enqueue_jobs_per_s": round(args.n / enq_s, 1),
        "drain_s": round(drain_s, 4),
        "drain_s_incl_startup": round(t_done - t_spawn, 4),
        "jobs_per_s": round(args.n / drain_s, 1),
        "worker_cpu_s": wcpu,
        "postgres_cpu_s": pg_cpu,
        "worker_rss_mb": {"ready": rss_ready, "peak": rss_peak},
        "worker_rc": rc,
    }
    print(
        f"  [{adapter.NAME}/{cfg_name}] enqueue {r['enqueue_jobs_per_s']:>9.0f} jobs/s | drain "
        f"{drain_s:7.2f}s = {r['jobs_per_s']:>7.0f} jobs/s | worker cpu "
        f"{wcpu and wcpu['total']}s, postgres cpu {pg_cpu}s",
        flush=True,
    )
    return r


def cmd_drain(args: argparse.Namespace) -> None:
    adapter = load_adapter(args.adapter)
    dsn0 = prepare_db(args.dsn, adapter)
    payload = meta(args, adapter, dsn0)
    payload["params"] = {"n": args.n, "chunk": args.chunk, "runs": args.runs, "poll_s": args.poll}
    payload["configs"] = {}
    for cfg in args.configs.split(","):
        runs = [drain_once(args, adapter, cfg) for _ in range(args.runs)]
        summary = {
            k: summarize([r[k] for r in runs])
            for k in ("jobs_per_s", "drain_s", "drain_s_incl_startup", "enqueue_jobs_per_s")
        }
        summary["worker_cpu_s"] = summarize(
            [r["worker_cpu_s"] and r["worker_cpu_s"]["total"] for r in runs]
        )
        summary["postgres_cpu_s"] = summarize([r["postgres_cpu_s"] for r in runs])
        summary["worker_rss_peak_mb"] = summarize([r["worker_rss_mb"]["peak"] for r in runs])
        payload["configs"][cfg] = {"summary": summary, "runs": runs}
        s = summary["jobs_per_s"]
        print(
            f"{adapter.NAME}/{cfg}: drain median {s['median']:.0f} jobs/s "
            f"(min {s['min']:.0f}, max {s['max']:.0f});"
            f" enqueue median {summary['enqueue_jobs_per_s']['median']:.0f} jobs/s",
            flush=True,
        )
    save("drain", adapter, payload, args.label)


# ----------------------------------------------------------------------------- latency
async def produce_paced(
    adapter: Any, dsn: str, n: int, interval: float
) -> list[tuple[int, float, float]]:
    sent: list[tuple[int, float, float]] = []
    async with adapter.producer(dsn) as p:
        await p.enqueue_one(-1)  # warm-up job (connection/prepared statements); excluded
        await asyncio.sleep(0.5)
        t_start = time.perf_counter()
        for i in range(n):
            delay = t_start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            t0 = time.time()
            await p.enqueue_one(i)
            t1 = time.time()
            sent.append((i, t0, t1))
    return sent


def latency_once(args: argparse.Namespace, adapter: Any) -> dict[str, Any]:
    config = adapter.CONFIGS[args.config]
    dsn = prepare_db(args.dsn, adapter)
    fd, stamp_path = tempfile.mkstemp(prefix="stamps_", suffix=".txt", dir=args.tmpdir)
    os.close(fd)
    proc, _, _ = start_worker(args.adapter, dsn, config, stamp_file=stamp_path)
    try:
        time.sleep(args.warmup)  # let the worker reach its idle LISTEN state
        sent = asyncio.run(produce_paced(adapter, dsn, args.n, args.interval))
        deadline = time.time() + args.timeout
        while True:
            stamps: dict[int, float] = {}
            for line in Path(stamp_path).read_text().splitlines():
                i, t = line.split()
                stamps[int(i)] = float(t)
            if all(i in stamps for i, _, _ in sent) or time.time() > deadline:
                break
            time.sleep(0.05)
    finally:
        stop_worker(proc)
        os.unlink(stamp_path)
    lat_commit = sorted((stamps[i] - t1) * 1000 for i, t0, t1 in sent if i in stamps)
    lat_call = sorted((stamps[i] - t0) * 1000 for i, t0, t1 in sent if i in stamps)
    enq_ms = sorted((t1 - t0) * 1000 for _, t0, t1 in sent)
    missing = len(sent) - len(lat_commit)

    def stats(v: list[float]) -> dict[str, float]:
        return {
            "p50": round(pct(v, 50), 3),
            "p95": round(pct(v, 95), 3),
            "p99": round(pct(v, 99), 3),
            "max": round(v[-1], 3),
            "min": round(v[0], 3),
            "mean": round(statistics.fmean(v), 3),
        }

    r = {
        "config": args.config,
        "n": args.n,
        "interval_s": args.interval,
        "missing": missing,
        "latency_ms_from_commit": stats(lat_commit),
        "latency_ms_from_enqueue_call": stats(lat_call),
        "enqueue_call_ms": stats(enq_ms),
    }
    s = r["latency_ms_from_commit"]
    print(
        f"  [{adapter.NAME}/{args.config}] commit->start ms p50 {s['p50']:.2f} p95 {s['p95']:.2f} "
        f"p99 {s['p99']:.2f} max {s['max']:.2f} (missing {missing}; enqueue call p50 "
        f"{r['enqueue_call_ms']['p50']:.2f} ms)",
        flush=True,
    )
    return r


def cmd_latency(args: argparse.Namespace) -> None:
    adapter = load_adapter(args.adapter)
    dsn0 = prepare_db(args.dsn, adapter)
    payload = meta(args, adapter, dsn0)
    payload["params"] = {
        "n": args.n,
        "interval_s": args.interval,
        "runs": args.runs,
        "config": args.config,
        "worker_options": adapter.CONFIGS[args.config],
        "warmup_s": args.warmup,
    }
    runs = [latency_once(args, adapter) for _ in range(args.runs)]
    summary: dict[str, Any] = {}
    for key in ("latency_ms_from_commit", "latency_ms_from_enqueue_call", "enqueue_call_ms"):
        summary[key] = {
            p: summarize([r[key][p] for r in runs]) for p in ("p50", "p95", "p99", "max")
        }
    payload["summary"] = summary
    payload["runs"] = runs
    s = summary["latency_ms_from_commit"]
    print(
        f"{adapter.NAME}/{args.config}: commit->start latency ms "
        f"(median of {args.runs} runs [min..max]): "
        + ", ".join(f"{p} {s[p]['median']:.2f} [{s[p]['min']:.2f}..{s[p]['max']:.2f}]" for p in s),
        flush=True,
    )
    save("latency", adapter, payload, args.label)


# ----------------------------------------------------------------------------- cli
def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--dsn",
        default=DEFAULT_DSN,
        help="admin DSN (URI form); a database bench_<queue> is created",
    )
    ap.add_argument(
        "--pgdata", default=DEFAULT_PGDATA, help="for postgres CPU accounting via postmaster.pid"
    )
    ap.add_argument(
        "--label", default=None, help="free-form tag stored in results (e.g. sync_commit_off)"
    )
    sub = ap.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("drain")
    d.add_argument("--adapter", required=True)
    d.add_argument("--configs", default="default,c10")
    d.add_argument("--n", type=int, default=20000)
    d.add_argument("--chunk", type=int, default=1000, help="jobs per batch-enqueue call")
    d.add_argument("--runs", type=int, default=3)
    d.add_argument("--poll", type=float, default=0.05, help="seconds between pending-count polls")
    d.add_argument("--timeout", type=float, default=900)
    d.set_defaults(func=cmd_drain)

    lt = sub.add_parser("latency")
    lt.add_argument("--adapter", required=True)
    lt.add_argument("--config", default="default")
    lt.add_argument("--n", type=int, default=200)
    lt.add_argument("--interval", type=float, default=0.02)
    lt.add_argument("--runs", type=int, default=3)
    lt.add_argument("--warmup", type=float, default=1.0)
    lt.add_argument("--timeout", type=float, default=30)
    lt.add_argument("--tmpdir", default=None)
    lt.set_defaults(func=cmd_latency)

    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
