#!/usr/bin/env python
"""Where our worker's CPU goes while it drains no-op jobs: py-spy samples the worker process
(the one the harness spawns) and the stacks are summarised by function and by layer.

    python profile_drain.py --config short --n 20000 [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench

HERE = Path(__file__).resolve().parent
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")

# layers, matched on a frame's file path, first match wins (checked innermost frame first)
LAYERS = [
    ("structlog (per-job log records)", ("structlog/",)),
    ("prometheus_client (metrics)", ("prometheus_client/",)),
    ("pydantic (Job model)", ("pydantic/", "pydantic_core/")),
    ("psycopg (queries, savepoints)", ("psycopg/", "psycopg_pool/", "psycopg_binary/")),
    ("asyncio event loop", ("asyncio/",)),
    ("worker/ (our code)", ("/worker/",)),
]


def parse_frame(frame: str) -> tuple[str, str]:
    m = _FRAME.match(frame)
    return (m.group("func"), m.group("file")) if m else (frame, "")


def summarise(raw: Path, top: int = 25) -> dict[str, Any]:
    total = 0
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    layers: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        total += count
        frames = [parse_frame(f) for f in stack.split(";")]
        seen = set()
        for func, file in frames:
            key = f"{func} ({Path(file).parent.name}/{Path(file).name})" if file else func
            if key not in seen:
                inclusive[key] += count
                seen.add(key)
        func, file = frames[-1]
        leaf[f"{func} ({Path(file).parent.name}/{Path(file).name})"] += count
        layer = "other (interpreter, stdlib)"
        for _func, file in reversed(frames):
            hit = next((name for name, keys in LAYERS if any(k in file for k in keys)), None)
            if hit is not None:
                layer = hit
                break
        layers[layer] += count

    def share(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in counter.most_common(top)]

    return {"samples": total, "by_layer_pct": share(layers), "inclusive_pct": share(inclusive),
            "self_pct": share(leaf)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", default=bench.DEFAULT_DSN)
    ap.add_argument("--adapter", default="ours")
    ap.add_argument("--config", default="short")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--out", default=os.environ.get("BENCH_RESULTS", str(HERE / "results")))
    args = ap.parse_args()

    adapter = bench.load_adapter(args.adapter)
    dsn = bench.prepare_db(args.dsn, adapter)
    asyncio.run(bench.enqueue_all(adapter, dsn, args.n, 1000))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = out / f"profile_{adapter.NAME}_{args.config}.raw.txt"
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    proc, _, t_ready = bench.start_worker(args.adapter, dsn, adapter.CONFIGS[args.config])
    spy = subprocess.Popen([py_spy, "record", "--pid", str(proc.pid), "--rate", str(args.rate),
                            "--format", "raw", "--output", str(raw), "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with bench.pconnect(dsn) as c:
            while bench.scalar(c, adapter.PENDING_SQL) > 0:
                time.sleep(0.05)
        drain_s = time.time() - t_ready
    finally:
        bench.stop_worker(proc)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.terminate()
            spy.wait()
    result = {"adapter": adapter.NAME, "config": args.config, "n": args.n,
              "drain_s_with_profiler": round(drain_s, 3), **summarise(raw)}
    (out / f"profile_{adapter.NAME}_{args.config}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("drain_s_with_profiler", "samples")}))
    for title in ("by_layer_pct", "inclusive_pct", "self_pct"):
        print(f"\n{title}:")
        for name, pct in result[title]:
            print(f"  {pct:5.1f}%  {name}")


if __name__ == "__main__":
    main()
