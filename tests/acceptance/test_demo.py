"""`make demo` on the fake model: `python -m demo`, the same entry point, against the test's
server, with the fake OpenAI server on 127.0.0.1 standing in for the offline models."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import yaml

from tests.support import db as testdb
from tests.support import fake_openai as fake
from tests.support.procs import ROOT
from tests.support.vectors import responder

SAMPLE = yaml.safe_load((ROOT / "data" / "sample_course.yaml").read_text(encoding="utf-8"))
KEYS = {q["question_text"]: q["correct_choice"] for q in SAMPLE["questions"]}
# grading enqueues an explanation for each multiple-choice question answered wrong or unsure
EXPLAINED = {a["question"] for quiz in SAMPLE["quizzes"] for a in quiz["answers"]
             if a["question"] in {q["key"] for q in SAMPLE["questions"]}
             and (a.get("is_correct") is False or a.get("unsure"))}
DEMO_DB = "worker_demo"  # the database `python -m demo` recreates on the server it is given


def _user_text(request: fake.Recorded) -> str:
    return "\n".join(str(m.get("content") or "") for m in request.body["messages"]
                     if m.get("role") == "user")


def _key_in(prompt: str) -> int:
    """The key of the question the prompt asks about: the sample question named first (the
    evidence further down may quote other questions)."""
    found = [(prompt.index(text), key) for text, key in KEYS.items() if text in prompt]
    assert found, "the explanation prompt names no sample question"
    return min(found)[1]


def _answer(request: fake.Recorded) -> fake.Reply:
    """A model that is always right: an explanation that names the key, or an analysis that
    cites the first wrong answer."""
    if "answer_choice" in str(request.body):
        return fake.chat_json({"answer_choice": _key_in(_user_text(request)),
                               "explanation_md": "정답의 근거는 [자료 1]에 있습니다.",
                               "confidence": "high"})
    return fake.chat_json({
        "weaknesses": [{"topic": "변압기 손실", "severity": "medium",
                        "evidence": "철손과 동손을 혼동했습니다.", "questions": [1]}],
        "suggestions": [{"text": "철손과 동손의 부하 의존성을 비교해 정리하세요.",
                         "topics": ["변압기 손실"]}],
    })


@pytest.fixture
def demo_db(pg_server: str) -> Iterator[str]:
    yield testdb.dsn_for(pg_server, DEMO_DB)
    testdb.drop_database(pg_server, DEMO_DB)


def _demo(server_dsn: str, model: fake.FakeOpenAI) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WORKER_", "OPENAI_")) and k != "DATABASE_URL"}
    env.update({
        "DATABASE_URL": server_dsn,
        "OPENAI_BASE_URL": model.base_url, "OPENAI_API_KEY": "test-key",
        "WORKER_LLM_MODEL": "fake-model",
        # an embedding endpoint of its own keeps the demo from starting the offline models
        "WORKER_EMBED_BASE_URL": model.base_url, "WORKER_EMBED_MODEL": "fake-embed",
    })
    return subprocess.run([sys.executable, "-m", "demo"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)


def test_the_demo_drains_every_kind_and_reports_it(pg_server: str, demo_db: str) -> None:
    with fake.FakeOpenAI() as model:
        model.fallback["embeddings"] = responder()
        model.fallback["chat"] = _answer
        result = _demo(pg_server, model)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "offline models" not in out
    questions = len(SAMPLE["questions"]) + len(SAMPLE["descriptive_questions"])
    chunks = sum(len(d["chunks"]) for d in SAMPLE["documents"])
    assert f"embedded {questions} questions and {chunks} chunks" in out
    for quiz in SAMPLE["quizzes"]:
        assert f"graded “{quiz['title']}”" in out
    for section in ("jobs by kind and outcome:", "explanations:", "course weakness analysis:",
                    "questions most similar to", "model usage (from queue.model_calls):"):
        assert section in out
    assert "guard failures" not in out and "none passed the guard" not in out

    jobs = testdb.sql(demo_db, "SELECT kind, status, count(*)::int AS n FROM queue.jobs "
                               "GROUP BY 1, 2 ORDER BY 1, 2")
    assert {r["status"] for r in jobs} == {"completed"}, jobs
    by_kind = {r["kind"]: r["n"] for r in jobs}
    assert by_kind["embedding"] == questions + chunks
    assert by_kind["weakness_analysis"] == len(SAMPLE["quizzes"])
    assert by_kind["explanation"] == len(EXPLAINED)
    assert testdb.one(demo_db, "SELECT count(*) FROM app.questions "
                               "WHERE ai_explanation_status = 'ready'") == len(EXPLAINED)
    assert testdb.one(demo_db, "SELECT count(*) FROM app.questions "
                               "WHERE embedding_status <> 'ready'") == 0
    analysis = testdb.one(demo_db, "SELECT course_weakness_analysis FROM app.courses")
    assert [w["topic"] for w in analysis["weaknesses"]] == ["변압기 손실"]
    # every model call went to the fake server, under the names given above
    calls = testdb.sql(demo_db, "SELECT DISTINCT kind, model FROM queue.model_calls")
    assert {"embedding", "explanation", "weakness_analysis"} <= {r["kind"] for r in calls}
    assert {r["model"] for r in calls} == {"fake-model", "fake-embed"}
