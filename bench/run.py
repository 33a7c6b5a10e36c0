#!/usr/bin/env python
"""`make bench`: every scenario of BENCHMARKS.md in one run, one queue at a time, on a
throwaway embedded PostgreSQL under .bench/; results as JSON in bench/results/<stamp>/,
then the tables of BENCHMARKS.md regenerated from them.

    python run.py                       # the full run (~30 min, plus up to 20 waiting for quiet)
    python run.py --quick               # small sizes, one run each: a smoke test (no report)
    python run.py --only gate,memory    # some scenarios (no report)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from quiet import loadavg, wait_quiet  # noqa: E402

PROJECT = HERE.parent
PGDATA = PROJECT / ".bench" / "pgdata"
SCENARIOS = ("drain", "latency", "profile", "gate", "triggers", "memory", "embeddings",
             "llm")
# (adapter, drain configs, latency config), peers first, as in the shared harness
QUEUES = (("pgqueuer_q", "default,c10", "default"),
          ("procrastinate_q", "default,c10", "default"),
          ("ours", "short,bulk,default,c10", "short"))


def sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"runs": 1, "drain_n": 2000, "latency_n": 50, "gate_n": 40,
                "triggers": ["--per-client", "100", "--questions", "1200", "--seconds", "1"],
                "memory": ["--noop", "2000", "--embeddings", "100", "--idle", "2"],
                "embeddings_n": 32}
    return {"runs": 3, "drain_n": 20000, "latency_n": 200, "gate_n": 500,
            "triggers": [], "memory": [], "embeddings_n": 500}


def sh(cmd: list[str], env: dict[str, str]) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=HERE, env=env, check=True)


def start_server() -> str:
    pg = [sys.executable, str(HERE / "pgserver.py")]
    if (PGDATA / "postmaster.pid").exists():
        subprocess.run([*pg, "stop", str(PGDATA)], check=False)
    shutil.rmtree(PGDATA, ignore_errors=True)
    out = subprocess.run([*pg, "start", str(PGDATA)], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def stop_server() -> None:
    if (PGDATA / "postmaster.pid").exists():
        subprocess.run([sys.executable, str(HERE / "pgserver.py"), "stop", str(PGDATA)],
                       check=False)
    shutil.rmtree(PGDATA, ignore_errors=True)


def machine(dsn: str) -> dict[str, Any]:
    import psutil
    import psycopg
    from ourworker import bq

    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    with psycopg.connect(dsn, autocommit=True) as conn:
        settings = {name: f"{value}{unit or ''}" if unit not in ("8kB",) else value
                    for name, value, unit in conn.execute(bq("server_settings")).fetchall()}
        settings["shared_buffers"] = conn.execute(b"SHOW shared_buffers").fetchone()[0]
        settings["wal_buffers"] = conn.execute(b"SHOW wal_buffers").fetchone()[0]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT,
                            capture_output=True, text=True, check=False).stdout.strip()
    return {"nproc": os.cpu_count(), "cpu": cpu, "memory_gb":
            round(psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version(),
            "kernel": platform.release(), "postgres": settings, "git_commit": commit,
            "when": dt.datetime.now().isoformat(timespec="seconds"), "loadavg_start": loadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=",".join(SCENARIOS))
    ap.add_argument("--quiet-load", type=float, default=0.8)
    ap.add_argument("--quiet-max", type=float, default=1200.0, help="give up waiting after")
    ap.add_argument("--quiet-budget", type=float, default=1200.0,
                    help="seconds of waiting for quiet in the whole run; then measure at once")
    args = ap.parse_args()
    only = args.only.split(",")
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}")
    size = sizes(args.quick)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S") + ("-quick" if args.quick else "")
    results = HERE / "results" / stamp
    results.mkdir(parents=True, exist_ok=True)
    xdg = PROJECT / ".bench" / "xdg"
    xdg.mkdir(parents=True, exist_ok=True, mode=0o700)
    xdg.chmod(0o700)
    runs = str(size["runs"])
    quiet_log: list[dict[str, Any]] = []

    def quiet(label: str) -> None:
        if args.quick:
            return
        spent = sum(q["waited_s"] for q in quiet_log)
        limit = max(0.0, min(args.quiet_max, args.quiet_budget - spent))
        quiet_log.append(wait_quiet(args.quiet_load, limit, label=label))
        (results / "quiet.json").write_text(json.dumps(quiet_log, indent=2))

    dsn = start_server()
    env = {**os.environ, "BENCH_DSN": dsn, "BENCH_PGDATA": str(PGDATA),
           "BENCH_RESULTS": str(results), "XDG_RUNTIME_DIR": str(xdg),
           "PYTHONWARNINGS": "ignore"}
    try:
        (results / "machine.json").write_text(json.dumps(machine(dsn), indent=2))
        py = sys.executable
        if "drain" in only:
            for adapter, configs, _ in QUEUES:
                quiet(f"drain {adapter}")
                sh([py, "bench.py", "--label", "durable", "drain", "--adapter", adapter,
                    "--configs", configs, "--n", str(size["drain_n"]), "--runs", runs], env)
        if "latency" in only:
            for adapter, _, config in QUEUES:
                quiet(f"latency {adapter}")
                sh([py, "bench.py", "--label", "durable", "latency", "--adapter", adapter,
                    "--config", config, "--n", str(size["latency_n"]), "--interval", "0.02",
                    "--runs", runs], env)
            quiet("latency ours, traced")
            sh([py, "bench.py", "--label", "traced", "latency", "--adapter", "ours_traced",
                "--config", "short", "--n", str(size["latency_n"]), "--interval", "0.02",
                "--runs", runs], env)
        if "profile" in only:
            quiet("profile ours/short")
            sh([py, "profile_drain.py", "--config", "short", "--n", str(size["drain_n"])], env)
        if "gate" in only:
            quiet("gate")
            sh([py, "gate.py", "run", "--n", str(size["gate_n"]), "--runs", runs, "--profile"],
               env)
        if "triggers" in only:
            quiet("triggers")
            sh([py, "triggers.py", "--runs", runs, *size["triggers"]], env)
        if "memory" in only:
            quiet("memory")
            sh([py, "memory.py", "--runs", runs, *size["memory"]], env)
        if "embeddings" in only:
            quiet("embeddings")
            sh([py, "embeddings.py", "--n", str(size["embeddings_n"]), "--runs", runs], env)
        if "llm" in only:
            # mlx-lm and llama.cpp are in the project's .venv, not in the benchmark's
            quiet("llm backends")
            sh([str(PROJECT / ".venv" / "bin" / "python"), "llm_backends.py", "--max-tokens",
                "16" if args.quick else "64"], env)
    finally:
        stop_server()
    print(f"results: {results}")
    if not args.quick and set(only) == set(SCENARIOS):
        sh([py, "report.py", str(results), "--write", str(PROJECT / "BENCHMARKS.md")], env)
    else:
        sh([py, "report.py", str(results)], env)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # runs the finally: the server stops


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    main()
    print(f"bench done in {(time.monotonic() - started) / 60:.1f} min")
