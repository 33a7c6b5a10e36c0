#!/usr/bin/env python
"""Run ONE worker of a given adapter in this process (spawned by bench.py).

Copied from the team's shared harness (shared/bench-peers/worker_main.py). Prints
"READY <unix time>" on stdout right before the worker loop starts; SIGTERM/SIGINT stop it
gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from bench import load_adapter


async def amain(args: argparse.Namespace) -> None:
    adapter = load_adapter(args.adapter)
    common.set_stamp_file(args.stamp_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def ready() -> None:
        print(f"READY {time.time():.6f}", flush=True)

    await adapter.run_worker(args.dsn, json.loads(args.config), stop, ready)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--config", default="{}", help="JSON dict of worker options")
    ap.add_argument("--stamp-file", default=None)
    args = ap.parse_args()
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
