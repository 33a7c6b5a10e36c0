"""The evaluation report: per model and prompt version, what reached learners and what it cost,
computed from the scratch queue's rows (pure functions) and printed as text or JSON."""

from __future__ import annotations

import math
import re
import textwrap
from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict

from worker.evaluation.labelled_set import LabelledSet

CITATION = re.compile(r"\[자료\s*\d+\]")
# the guard refusals, by what refused: the job result's `guard`, or the error code
REFUSALS = ("guard_fail", "unverified")


class Sample(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    question_text: str
    answer: int
    confidence: str | None
    text: str


class RunReport(BaseModel):
    """One model and prompt version over the set. Rates are of `n`; latency and tokens are per
    explanation (every chat round trip of its job: the repair round, a retry and the blind
    solve included); citations and the cap rate are of the published explanations."""

    model_config = ConfigDict(frozen=True)

    model: str
    served_as: list[str]
    prompt_version: int
    verify: str
    n: int
    published: int
    publish_rate: float
    outcomes: dict[str, int]
    guard_refusals: dict[str, int]
    blind_checked: int
    blind_agreed: int
    parse_fail_attempts: int
    parse_fail_final: int
    truncated: int
    # every attempt that did not complete, by its code (timeouts and retries included)
    failed_attempts: dict[str, int]
    latency_mean_s: float | None
    latency_p95_s: float | None
    prompt_tokens: float | None
    completion_tokens: float | None
    citations_per_published: float | None
    published_citing: int
    capped: int
    cap_rate: float | None
    wall_s: float
    samples: list[Sample]


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None


def p95(values: list[float]) -> float | None:
    """The nearest-rank 95th percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[math.ceil(0.95 * len(ordered)) - 1], 1)


def _outcome(row: dict[str, Any]) -> str:
    if row["status"] == "completed":
        return "published"
    return str(row["error_code"] or row["status"] or "not_run")


def build(model: str, version: int, verify: str, labelled: LabelledSet,
          question_ids: dict[str, int], rows: list[dict[str, Any]], wall_s: float,
          samples: int) -> RunReport:
    """The report of one run from its eval_explanations rows."""
    by_qid = {qid: item for item in labelled.questions
              if (qid := question_ids.get(item.id)) is not None}
    results = [row["result"] or {} for row in rows]
    published = [(row, res) for row, res in zip(rows, results, strict=True)
                 if row["status"] == "completed" and row["text"]]
    refused = Counter(res.get("guard") or row["error_code"]
                      for row, res in zip(rows, results, strict=True)
                      if row["error_code"] in REFUSALS)
    blind = [res for res in results if "blind_answer" in res]
    called = [row for row in rows if row["calls"]]
    codes = [code for row in rows for code in row["attempt_codes"]]
    cites = [len(CITATION.findall(row["text"])) for row, _ in published]
    capped = sum(1 for _, res in published if res.get("capped"))
    n = len(rows)
    return RunReport(
        model=model, served_as=sorted({str(name) for row, res in zip(rows, results, strict=True)
                                       if (name := row["model"] or res.get("model"))}),
        prompt_version=version, verify=verify, n=n, published=len(published),
        publish_rate=round(len(published) / n, 3) if n else 0.0,
        outcomes=dict(Counter(_outcome(row) for row in rows).most_common()),
        guard_refusals=dict(refused.most_common()),
        blind_checked=len(blind), blind_agreed=sum(1 for res in blind if res.get("verified")),
        parse_fail_attempts=codes.count("parse_fail"),
        parse_fail_final=sum(1 for row in rows if row["error_code"] == "parse_fail"),
        truncated=codes.count("truncated"),
        failed_attempts=dict(Counter(c for c in codes if c and c != "completed").most_common()),
        latency_mean_s=_mean([row["latency_ms"] / 1000 for row in called]),
        latency_p95_s=p95([row["latency_ms"] / 1000 for row in called]),
        prompt_tokens=_mean([float(row["prompt_tokens"] or 0) for row in called]),
        completion_tokens=_mean([float(row["completion_tokens"] or 0) for row in called]),
        citations_per_published=_mean([float(c) for c in cites]),
        published_citing=sum(1 for c in cites if c), capped=capped,
        cap_rate=round(capped / len(published), 3) if published else None,
        wall_s=round(wall_s, 1),
        samples=[Sample(id=by_qid[row["question_id"]].id,
                        question_text=by_qid[row["question_id"]].question_text,
                        answer=by_qid[row["question_id"]].answer,
                        confidence=res.get("confidence"), text=row["text"])
                 for row, res in published[:samples] if row["question_id"] in by_qid],
    )


def _pct(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.0f}%)" if whole else f"{part}/0"


def _num(value: float | None, unit: str = "") -> str:
    return "—" if value is None else f"{value:g}{unit}"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items()) or "none"


SUMMARY = ("model", "prompt", "n", "published", "guard", "blind", "parse", "trunc", "mean s",
           "p95 s", "prompt tok", "compl tok", "[자료 N]", "capped", "wall s")


def _summary_row(r: RunReport) -> list[str]:
    blind = f"{r.blind_agreed}/{r.blind_checked}" if r.blind_checked else "—"
    return [r.model, f"v{r.prompt_version}", str(r.n), _pct(r.published, r.n),
            str(sum(r.guard_refusals.values())), blind, str(r.parse_fail_attempts),
            str(r.truncated), _num(r.latency_mean_s), _num(r.latency_p95_s),
            _num(r.prompt_tokens), _num(r.completion_tokens),
            _num(r.citations_per_published), _pct(r.capped, r.published), _num(r.wall_s)]


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def _details(r: RunReport) -> list[str]:
    blind = (f"{_pct(r.blind_agreed, r.blind_checked)} solved blind agree with the key"
             if r.blind_checked else "— (verification off)")
    lines = [
        f"{r.model}, prompt v{r.prompt_version} (verify {r.verify}; served as "
        f"{', '.join(r.served_as) or '—'}; {r.wall_s:g} s for {r.n} explanations)",
        f"  published           {_pct(r.published, r.n)}",
        f"  outcomes            {_counts(r.outcomes)}",
        f"  guard refusals      {sum(r.guard_refusals.values())} ({_counts(r.guard_refusals)})",
        f"  blind agreement     {blind}",
        f"  parse failures      {r.parse_fail_attempts} attempt(s), {r.parse_fail_final} final",
        f"  truncations         {r.truncated}",
        f"  failed attempts     {_counts(r.failed_attempts)}",
        f"  latency             mean {_num(r.latency_mean_s, ' s')}, "
        f"p95 {_num(r.latency_p95_s, ' s')} per explanation (model time)",
        f"  tokens              prompt {_num(r.prompt_tokens)}, completion "
        f"{_num(r.completion_tokens)} per explanation",
        f"  [자료 N] citations   {_num(r.citations_per_published)} per published "
        f"explanation ({r.published_citing} of {r.published} cite)",
        f"  capped at 1,200     {_pct(r.capped, r.published)}",
    ]
    for sample in r.samples:
        lines.append(f"  · [{sample.id}] {sample.question_text} (정답 {sample.answer}번, "
                     f"confidence {sample.confidence})")
        lines.append(textwrap.indent(textwrap.fill(sample.text.replace("\n", " "), 96),
                                     "      "))
    return lines


def render(labelled: LabelledSet, reports: list[RunReport]) -> str:
    """The text report: one summary line per run, then each run's details and samples."""
    verify = reports[0].verify if reports else "off"
    lines = [f"eval explanations: “{labelled.name}”, {reports[0].n if reports else 0} "
             f"question(s), verify {verify}", ""]
    lines += _table([list(SUMMARY), *(_summary_row(r) for r in reports)])
    for report in reports:
        lines += ["", *_details(report)]
    return "\n".join(lines)
