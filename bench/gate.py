#!/usr/bin/env python
"""Scenario 3, gate utilisation: N jobs of a real job kind, each one ModelClient.complete call
through build_client's gate (capacity 1) to the fake model, which answers after 50 ms.
The floor is N x 50 ms; the overhead is how much longer the whole run takes.

    python gate.py run --n 500 --concurrency 2,1 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import psycopg
from ourworker import (
    HERE,
    bq,
    configure_logs,
    fresh_database,
    migrate_fresh,
    python,
    spawn,
    stop,
    wait_until_drained,
    worker_settings,
)
from profile_drain import summarise
from pydantic import BaseModel

from bench import DEFAULT_DSN, summarize

KIND = "bench.llm"


class Answer(BaseModel):
    ok: bool


async def worker_main(dsn: str, concurrency: int) -> None:
    """One worker process: the bench.llm kind on the real model client and gate."""
    from worker.config import load_settings
    from worker.job import Job
    from worker.loop import Worker
    from worker.models.build import build_client
    from worker.models.types import CallContext, CompletionRequest, Message
    from worker.registry import JobConnection, JobKind, Registry

    configure_logs(f"gate-c{concurrency}")
    client = build_client(load_settings().models, dsn)

    async def call_model(conn: JobConnection, job: Job) -> dict[str, Any]:
        result = await client.complete(
            CompletionRequest[Answer](
                messages=(Message(role="system", content="Answer as JSON: {\"ok\": true}"),
                          Message(role="user", content=f"job {job.id}")),
                output=Answer, max_tokens=20),
            CallContext.for_job(job))
        return {"ok": result.value.ok, "latency_ms": result.latency_ms,
                "gate_wait_ms": result.gate_wait_ms}

    registry = Registry()
    registry.register(JobKind(KIND, call_model, batch_size=1, concurrency=concurrency,
                              timeout=60))
    worker = Worker(worker_settings(dsn), dsn, registry)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.run(on_ready=lambda: print(f"READY {time.time():.6f}", flush=True))
    finally:
        await client.aclose()


def run_once(admin_dsn: str, base_url: str, n: int, concurrency: int,
             delay: float, profile_to: Path | None = None) -> dict[str, Any]:
    dsn = fresh_database(admin_dsn, "bench_gate")
    migrate_fresh(dsn)
    env = {**os.environ, "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "not-needed",
           "WORKER_LLM_MODEL": "fake-model", "WORKER_LLM_GATE_CAPACITY": "1",
           "WORKER_LLM_GATE_CROSS_PROCESS": "false"}
    proc, _ = spawn([python(), str(HERE / "gate.py"), "worker", "--dsn", dsn,
                     "--concurrency", str(concurrency)], "READY", env=env)
    spy = None
    if profile_to is not None:
        spy = subprocess.Popen([str(Path(python()).parent / "py-spy"), "record", "--pid",
                                str(proc.pid), "--rate", "200", "--format", "raw", "--output",
                                str(profile_to), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # idle, listening
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(bq("enqueue_many"), {"kind": KIND, "start": 0, "n": n})
            t0 = time.time()  # the enqueue has committed
            wait_until_drained(dsn, timeout=n * delay * 4 + 60)
            span = conn.execute(bq("job_span"), {"kind": KIND}).fetchone()
            calls = conn.execute(bq("model_call_stats"), {"kind": KIND}).fetchone()
    finally:
        stop(proc)
        if spy is not None:
            spy.wait(60)
    assert span is not None and calls is not None
    jobs, completed, _first, last = span
    total = last - t0
    floor = n * delay
    return {"concurrency": concurrency, "n": n, "completed": completed, "jobs": jobs,
            "total_s": round(total, 3), "floor_s": floor,
            "overhead_pct": round((total / floor - 1) * 100, 2),
            "per_call_overhead_ms": round((total - floor) / n * 1000, 3),
            "model_calls": calls[0], "model_calls_ok": calls[1],
            "gate_busy_pct": round(calls[2] / 1000 / total * 100, 2),
            "call_latency_ms_p50": round(calls[3], 3), "call_latency_ms_p99": round(calls[4], 3),
            "call_latency_ms_max": round(calls[5], 3)}


async def bare_client(base_url: str, n: int) -> float:
    """Seconds for n chat calls one after another from a bare httpx client (no SDK, no
    queue, no gate) to the same fake server: what the server and HTTP alone cost."""
    import httpx2

    body = {"model": "fake-model", "messages": [{"role": "user", "content": "job"}],
            "max_tokens": 20}
    async with httpx2.AsyncClient(base_url=base_url) as http:
        for _ in range(5):  # warm the connection
            (await http.post("/chat/completions", json=body)).json()
        started = time.perf_counter()
        for _ in range(n):
            (await http.post("/chat/completions", json=body)).json()
        return time.perf_counter() - started


def cmd_run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stats = out / "gate_fake_server_ms.json"
    fake, base_url = spawn([python(), str(HERE / "fake_model.py"), "--delay", str(args.delay),
                            "--stats", str(stats)], "http")
    results: dict[str, Any] = {"n": args.n, "delay_s": args.delay, "gate_capacity": 1,
                               "floor_s": args.n * args.delay, "configs": {}}
    try:
        bare = [asyncio.run(bare_client(base_url, args.n)) for _ in range(args.runs)]
        results["bare_client"] = {
            "total_s": summarize(bare),
            "overhead_pct": summarize([(b / results["floor_s"] - 1) * 100 for b in bare])}
        print(f"  [bare httpx client] {args.n} calls in {statistics.median(bare):.3f} s: "
              f"+{(statistics.median(bare) / results['floor_s'] - 1) * 100:.2f} % over the "
              "floor", flush=True)
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            runs = []
            for _ in range(args.runs):
                r = run_once(args.dsn, base_url, args.n, concurrency, args.delay)
                print(f"  [gate c{concurrency}] {r['completed']}/{r['n']} in {r['total_s']:.3f} s"
                      f" vs floor {r['floor_s']:.1f} s: +{r['overhead_pct']:.2f} % "
                      f"({r['per_call_overhead_ms']:.2f} ms/call); call p50 "
                      f"{r['call_latency_ms_p50']:.1f} ms", flush=True)
                runs.append(r)
            summary = {k: summarize([r[k] for r in runs]) for k in
                       ("total_s", "overhead_pct", "per_call_overhead_ms", "gate_busy_pct",
                        "call_latency_ms_p50", "call_latency_ms_p99")}
            results["configs"][f"c{concurrency}"] = {"summary": summary, "runs": runs}
        if args.profile:
            # one more run with py-spy on the worker: where the time per call goes
            raw = out / "profile_gate.raw.txt"
            r = run_once(args.dsn, base_url, args.n, 2, args.delay, profile_to=raw)
            results["profile"] = {"run": r, **summarise(raw)}
    finally:
        stop(fake)
    if stats.exists():
        handled = sorted(json.loads(stats.read_text()))
        if handled:
            # the fake's own time per call, from its parsed request to its reply's send:
            # the delay plus its thread's work; the client sees this plus HTTP and the SDK
            results["fake_server_ms"] = {"p50": round(handled[len(handled) // 2], 3),
                                         "p99": round(handled[int(len(handled) * 0.99)], 3),
                                         "calls": len(handled)}
    (out / "gate.json").write_text(json.dumps(results, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--dsn", default=DEFAULT_DSN)
    r.add_argument("--n", type=int, default=500)
    r.add_argument("--delay", type=float, default=0.05)
    r.add_argument("--concurrency", default="2,1", help="slots of the kind, comma-separated")
    r.add_argument("--runs", type=int, default=3)
    r.add_argument("--profile", action="store_true", help="one more run under py-spy")
    r.add_argument("--out", default=os.environ.get("BENCH_RESULTS", str(HERE / "results")))
    w = sub.add_parser("worker")
    w.add_argument("--dsn", required=True)
    w.add_argument("--concurrency", type=int, default=2)
    args = ap.parse_args()
    if args.cmd == "run":
        cmd_run(args)
    else:
        asyncio.run(worker_main(args.dsn, args.concurrency))


if __name__ == "__main__":
    main()
