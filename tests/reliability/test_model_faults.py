"""Model faults from docs/models.md's table, injected at random into explanation and embedding
jobs run by worker processes: no worker crashes, and every job ends as the table says.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.reliability.support import (
    API_KEY,
    Course,
    Fleet,
    assert_no_secrets,
    database_text,
    envelope,
    marker_in,
    model_env,
    one,
    report,
    sql,
    wait_terminal,
)
from tests.support import fake_openai as fake
from tests.support.vectors import vector

pytestmark = pytest.mark.chaos

TIMEOUT = 1.0  # WORKER_LLM_TIMEOUTS for both kinds: a "slow" reply takes longer
MAX_ATTEMPTS = 2  # what app.request_explanation and the embedding trigger enqueue with
EMBED_MARKER = re.compile(r"chaos embed (\d+)\b")


@dataclass(frozen=True)
class Fault:
    """One scripted reply and what the table says it leads to: ok, invalid (shown back to
    the model once), guard (answered, but not the key), retry:<code>, snooze:<code> (a
    429: rescheduled without using an attempt) or final:<code>."""

    weight: int
    effect: str
    reply: Callable[[int], fake.Reply]


def _wrong(key: int) -> int:
    return key % 4 + 1


CHAT: dict[str, Fault] = {
    "valid": Fault(24, "ok", lambda key: fake.chat_json(envelope(key))),
    "fenced": Fault(8, "ok", lambda key: fake.fenced(envelope(key))),
    "prose": Fault(8, "ok", lambda key: fake.with_prose(envelope(key))),
    "truncated": Fault(6, "final:truncated", lambda key: fake.truncated()),
    "rate_limited": Fault(6, "snooze:rate_limited",
                          lambda key: fake.rate_limited(retry_after="1")),
    "rate_limited_ms": Fault(4, "snooze:rate_limited",
                             lambda key: fake.rate_limited(retry_after=None,
                                                           retry_after_ms="300")),
    "quota": Fault(4, "final:quota_exhausted", lambda key: fake.insufficient_quota()),
    "server_error": Fault(10, "retry:server_error", lambda key: fake.server_error()),
    "slow": Fault(4, "retry:timeout",
                  lambda key: fake.slow(fake.chat_json(envelope(key)), TIMEOUT + 1.5)),
    "refusal": Fault(5, "final:refused", lambda key: fake.refusal()),
    "content_filter": Fault(2, "final:content_filter", lambda key: fake.content_filter()),
    "empty": Fault(8, "invalid", lambda key: fake.empty()),
    "prose_only": Fault(5, "invalid",
                        lambda key: fake.chat("I think the answer is three, because…")),
    "bad_request": Fault(2, "final:bad_request",
                         lambda key: fake.error(400, "Invalid parameter: messages")),
    "wrong_answer": Fault(4, "guard", lambda key: fake.chat_json(envelope(_wrong(key)))),
}

EMBED: dict[str, Fault] = {
    "valid": Fault(40, "ok", lambda n: fake.embeddings([vector(f"embed {n}")])),
    "server_error": Fault(12, "retry:server_error", lambda n: fake.server_error()),
    "rate_limited": Fault(8, "snooze:rate_limited",
                          lambda n: fake.rate_limited(retry_after=None, retry_after_ms="200")),
    "slow": Fault(4, "retry:timeout",
                  lambda n: fake.slow(fake.embeddings([vector("x")]), TIMEOUT + 1.5)),
    "quota": Fault(4, "final:quota_exhausted", lambda n: fake.insufficient_quota()),
    "bad_request": Fault(4, "final:bad_request",
                         lambda n: fake.error(400, "input is too long for this model")),
    # a vector the column cannot hold: the write is refused, final
    "wrong_dimension": Fault(4, "final:bad_vector", lambda n: fake.embeddings([[0.5] * 384])),
}


# Each question gets its own script of replies; what the table promises for that script
# (which attempts retry, which fault is final, how many round trips) is worked out by
# expect() and compared with what the worker recorded.


@dataclass
class Expected:
    status: str
    error_code: str | None
    attempts: list[tuple[str, str | None]] = field(default_factory=list)
    calls: int = 0


def expect(script: list[str], table: dict[str, Fault], repair_round: bool) -> Expected:
    """What docs/models.md says a job meets with these replies, in order."""
    used = 0
    history: list[tuple[str, str | None]] = []
    attempt = 0
    while True:
        attempt += 1
        effect = "invalid"
        for round_ in (1, 2) if repair_round else (1,):
            # past its script the model answers `valid` (ScriptedModel._next)
            effect = table[script[used] if used < len(script) else "valid"].effect
            used += 1
            if effect != "invalid":
                break
            if round_ == 2 or not repair_round:
                effect = "retry:parse_fail"
        if effect == "ok":
            history.append(("completed", None))
            return Expected("completed", None, history, used)
        if effect == "guard":
            history.append(("failed", "guard_fail"))
            return Expected("failed", "guard_fail", history, used)
        kind, code = effect.split(":")
        if kind == "snooze":  # a 429: rescheduled without using the attempt
            history.append(("snoozed", code))
            attempt -= 1
            continue
        if kind == "final" or attempt == MAX_ATTEMPTS:
            history.append(("failed", code))
            return Expected("failed", code, history, used)
        history.append(("retry", code))


# Scripts every run starts with, so each row of the table is met at least once; the rest
# of the questions get random scripts.
FIXED_CHAT = [["valid"], ["fenced"], ["prose"], ["truncated"], ["quota"], ["refusal"],
              ["content_filter"], ["bad_request"], ["wrong_answer"], ["empty", "valid"],
              ["empty", "prose_only", "empty", "empty"], ["server_error", "valid"],
              ["rate_limited", "valid"], ["rate_limited_ms", "server_error"],
              ["slow", "valid"]]
FIXED_EMBED = [["valid"], ["server_error", "valid"], ["rate_limited", "server_error"],
               ["slow", "valid"], ["quota"], ["bad_request"], ["wrong_dimension"]]


def _script(table: dict[str, Fault], rng: random.Random, fixed: list[list[str]], n: int
            ) -> list[str]:
    if n < len(fixed):
        return (fixed[n] + ["valid"] * 2 * MAX_ATTEMPTS)[: 2 * MAX_ATTEMPTS]
    names = list(table)
    return rng.choices(names, weights=[table[n].weight for n in names], k=2 * MAX_ATTEMPTS)


class ScriptedModel:
    """The fake server's answers: the next reply of the asked-about question's script."""

    def __init__(self, course: Course) -> None:
        self.course = course
        self.chat: dict[int, list[str]] = {}
        self.embed: dict[int, list[str]] = {}
        self._lock = threading.Lock()
        self.served: Counter[str] = Counter()

    def _next(self, scripts: dict[int, list[str]], marker: int, endpoint: str) -> str:
        with self._lock:
            script = scripts[marker]
            name = script.pop(0) if script else "valid"
            self.served[f"{endpoint}:{name}"] += 1
            return name

    def answer_chat(self, request: fake.Recorded) -> fake.Reply:
        marker = marker_in(request)
        if marker is None or marker not in self.chat:
            return fake.error(400, "scripted model: unknown question")
        return CHAT[self._next(self.chat, marker, "chat")].reply(self.course.keys[marker])

    def answer_embed(self, request: fake.Recorded) -> fake.Reply:
        texts = request.body.get("input") or [""]
        found = EMBED_MARKER.search(texts[0])
        if found is None:  # the start-up dimension probe
            return fake.embeddings([vector(t) for t in texts])
        marker = int(found.group(1))
        return EMBED[self._next(self.embed, marker, "embed")].reply(marker)


@dataclass(frozen=True)
class Plan:
    explanations: int
    embeddings: int
    timeout: float = 120


PLANS = {"reduced": Plan(explanations=60, embeddings=30),
         "full": Plan(explanations=300, embeddings=150, timeout=600)}


def _outcome(job: dict[str, Any], attempts: list[dict[str, Any]]) -> Expected:
    return Expected(job["status"], job["error_code"],
                    [(a["outcome"], a["error_code"]) for a in attempts])


def test_model_faults(size: str, seed: int, rng: random.Random, dsn: str, worker_dsn: str,
                      model: fake.FakeOpenAI, fleets: Callable[..., Fleet]) -> None:
    plan = PLANS[size]
    course = Course(dsn)
    scripted = ScriptedModel(course)
    model.fallback["chat"] = scripted.answer_chat
    model.fallback["embeddings"] = scripted.answer_embed

    expected: dict[int, Expected] = {}  # job id -> outcome
    markers: dict[int, tuple[str, int]] = {}  # job id -> (endpoint, marker)
    for n in range(plan.explanations):
        qid = course.add(n, key=rng.randint(1, 4))
        scripted.chat[n] = _script(CHAT, rng, FIXED_CHAT, n)
        job = course.request(qid)
        expected[job] = expect(list(scripted.chat[n]), CHAT, repair_round=True)
        markers[job] = ("chat", n)
    for n in range(plan.embeddings):
        scripted.embed[n] = _script(EMBED, rng, FIXED_EMBED, n)
        # a new question as the app inserts it: the trigger enqueues its embedding
        qid = one(dsn, "INSERT INTO app.questions (course_id, question_text, choice_1, "
                       "choice_2, choice_3, choice_4, correct_choice) VALUES "
                       "(%s, %s, '가', '나', '다', '라', 1) RETURNING id",
                  (course.id, f"chaos embed {n}: 변압기 손실"))
        job = int(one(dsn, "SELECT id FROM queue.jobs WHERE kind = 'embedding' "
                           "AND subject = %s", (f"question:{qid}",)))
        expected[job] = expect(list(scripted.embed[n]), EMBED, repair_round=False)
        markers[job] = ("embeddings", n)

    fleet = fleets(worker_dsn, model_env(
        model, WORKER_KINDS="explanation,embedding", WORKER_BATCH_SIZE="embedding=1",
        WORKER_LLM_TIMEOUTS=f"explanation={TIMEOUT},embedding={TIMEOUT}"))
    workers = fleet.start(2)
    started = time.monotonic()
    job_ids = list(expected)
    wait_terminal(dsn, job_ids, plan.timeout, fleet)
    elapsed = time.monotonic() - started
    # 0 crashes: the two processes that started are the two that stop, cleanly
    assert fleet.alive == workers and not fleet.crashed()
    assert fleet.stop() == {w.pid: 0 for w in workers}
    assert not fleet.events("slot_error"), fleet.events("slot_error")[:3]

    jobs = {r["id"]: r for r in sql(dsn, "SELECT id, status, error_code, error_message "
                                         "FROM queue.jobs WHERE id = ANY(%s)", (job_ids,))}
    attempts: dict[int, list[dict[str, Any]]] = {}
    for a in sql(dsn, "SELECT job_id, outcome, error_code FROM queue.attempts "
                      "WHERE job_id = ANY(%s) ORDER BY attempt, id", (job_ids,)):
        attempts.setdefault(a["job_id"], []).append(a)
    recorded = Counter(r["job_id"] for r in sql(
        dsn, "SELECT job_id FROM queue.model_calls WHERE job_id = ANY(%s)", (job_ids,)))
    asked: Counter[tuple[str, int]] = Counter()
    for request in model.requests:
        if request.endpoint == "chat" and (m := marker_in(request)) is not None:
            asked[("chat", m)] += 1
        elif request.endpoint == "embeddings":
            found = EMBED_MARKER.search((request.body.get("input") or [""])[0])
            if found:
                asked[("embeddings", int(found.group(1)))] += 1

    wrong: list[str] = []
    for job_id, want in expected.items():
        got = _outcome(jobs[job_id], attempts.get(job_id, []))
        got.calls = asked[markers[job_id]]
        if (got.status, got.error_code, got.attempts, got.calls) != (
                want.status, want.error_code, want.attempts, want.calls):
            wrong.append(f"job {job_id} {markers[job_id]}: expected {want}, got {got}")
        if recorded[job_id] != want.calls:
            wrong.append(f"job {job_id}: {recorded[job_id]} model_calls rows for "
                         f"{want.calls} round trips")
        failed = jobs[job_id]
        if failed["status"] == "failed" and not (failed["error_message"] or "").strip():
            wrong.append(f"job {job_id}: failed without a message")
    assert wrong == [], "\n".join(wrong[:15])

    # the question rows agree with their jobs
    states = Counter((r["kind"], r["status"], r["question_state"]) for r in sql(dsn, """
        SELECT j.kind, j.status,
               CASE WHEN j.kind = 'explanation' THEN q.ai_explanation_status
                    ELSE q.embedding_status END AS question_state
        FROM queue.jobs j JOIN app.questions q ON j.subject = 'question:' || q.id
        WHERE j.id = ANY(%s)""", (job_ids,)))
    assert set(states) <= {("explanation", "completed", "ready"),
                           ("explanation", "failed", "failed"),
                           ("embedding", "completed", "ready"),
                           ("embedding", "failed", "failed")}, states
    assert_no_secrets(fleet.output(), database_text(dsn))
    assert API_KEY not in str([r.body for r in model.requests])  # the key travels in headers
    outcomes = Counter(f"{w.status}:{w.error_code or '-'}" for w in expected.values())
    report("model_faults", size, seed, {
        "jobs": len(expected), "explanations": plan.explanations,
        "embeddings": plan.embeddings, "replies_served": sum(scripted.served.values()),
        "faults_injected": sum(n for name, n in scripted.served.items()
                               if name.split(":")[1] not in ("valid", "fenced", "prose")),
        "served": dict(sorted(scripted.served.items())), "outcomes": dict(sorted(
            outcomes.items())), "as_documented": len(expected) - len(wrong),
        "worker_crashes": 0, "seconds": round(elapsed, 1)})
