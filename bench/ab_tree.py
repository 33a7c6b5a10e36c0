#!/usr/bin/env python
"""A/B of our worker against another checkout of it (e.g. a git worktree of an earlier
commit), interleaved in one run on one server, beside pgqueuer as the yardstick:

    git worktree add /tmp/base b892172
    .bench/venv/bin/python bench/ab_tree.py /tmp/base --rounds 3

Each round drains (`short` and `default` configs) and measures pickup latency (`short`) for
pgqueuer, this tree and the other tree, in that order; the other tree's `worker` package is
put first on PYTHONPATH, the harness itself is this tree's. Results land in
bench/results/<stamp>-ab/ with labels `ab-this` and `ab-other`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import PGDATA, sh, start_server, stop_server  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("other", type=Path, help="the other checkout's root (has worker/)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=20000)
    args = ap.parse_args()
    results = HERE / "results" / (dt.datetime.now().strftime("%Y%m%d-%H%M%S") + "-ab")
    results.mkdir(parents=True, exist_ok=True)
    xdg = HERE.parent / ".bench" / "xdg"
    xdg.mkdir(parents=True, exist_ok=True, mode=0o700)
    dsn = start_server()
    base = {**os.environ, "BENCH_DSN": dsn, "BENCH_PGDATA": str(PGDATA),
            "BENCH_RESULTS": str(results), "XDG_RUNTIME_DIR": str(xdg),
            "PYTHONWARNINGS": "ignore"}
    base.pop("PYTHONPATH", None)
    trees = {"ab-this": base, "ab-other": {**base, "PYTHONPATH": str(args.other.resolve())}}
    py = sys.executable
    try:
        for _ in range(args.rounds):
            sh([py, "bench.py", "--label", "ab-peer", "drain", "--adapter", "pgqueuer_q",
                "--configs", "default", "--n", str(args.n), "--runs", "1"], base)
            for label, env in trees.items():
                sh([py, "bench.py", "--label", label, "drain", "--adapter", "ours",
                    "--configs", "short,default", "--n", str(args.n), "--runs", "1"], env)
            sh([py, "bench.py", "--label", "ab-peer", "latency", "--adapter", "pgqueuer_q",
                "--config", "default", "--n", "200", "--interval", "0.02", "--runs", "1"], base)
            for label, env in trees.items():
                sh([py, "bench.py", "--label", label, "latency", "--adapter", "ours",
                    "--config", "short", "--n", "200", "--interval", "0.02", "--runs", "1"],
                   env)
    finally:
        stop_server()
    print(f"results in {results}")


if __name__ == "__main__":
    main()
