"""`python -m worker eval explanations` as an operator runs it, against a scripted fake model:
the report's counts, the blind solve of verification mode, and the live database untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import db as testdb
from tests.support import fake_openai as fake
from tests.support.procs import ROOT
from tests.support.vectors import responder

LONG = "변압기의 철손은 부하와 관계없이 거의 일정하다. " * 60  # about 1,600 characters
QUESTIONS = [
    # id, stem, key, what the fake model does with it
    ("pub", "제2정규형에서 제거하는 종속은?", 2, "published"),
    ("long", "모든 결정자가 후보키인 정규형은?", 4, "capped"),
    ("guard", "커밋된 결과가 장애 후에도 남는 성질은?", 4, "wrong key"),
    ("parse", "라우팅을 담당하는 계층은?", 2, "not JSON"),
    ("trunc", "UDP의 특징으로 옳은 것은?", 3, "cut off"),
]
SET = {
    "name": "fake set", "course": "평가 과정",
    "documents": [{"title": "정규화", "summary": "정규형 요약",
                   "chunks": ["제2정규형은 부분 함수 종속을 제거한다.",
                              "BCNF는 모든 결정자가 후보키인 상태이다."]}],
    "questions": [{"id": qid, "question_text": stem, "choices": ["가", "나", "다", "라"],
                   "answer": key, "topic": "db"} for qid, stem, key, _ in QUESTIONS],
}
STEMS = {stem: (qid, key) for qid, stem, key, _ in QUESTIONS}


def _asked(request: fake.Recorded) -> tuple[str, int]:
    """The set's question the prompt is about: the stem named first (evidence further down
    may quote other questions)."""
    user = "\n".join(str(m["content"]) for m in request.body["messages"] if m["role"] == "user")
    found = sorted((user.index(stem), ids) for stem, ids in STEMS.items() if stem in user)
    assert found, "the prompt names no question of the set"
    return found[0][1]


def _model(request: fake.Recorded) -> fake.Reply:
    qid, key = _asked(request)
    if "explanation_md" not in json.dumps(request.body):  # the blind solve of verify mode
        return fake.chat_json({"answer_choice": 1 if qid == "long" else key})
    if qid == "parse":
        return fake.chat("I think the answer is probably the second one.")
    if qid == "trunc":
        return fake.truncated()
    text = {"pub": "[자료 1]에 따르면 정답입니다. [자료 2]도 같습니다.",
            "long": "[자료 1] " + LONG}.get(qid, "정답의 근거는 자료에 있습니다.")
    return fake.chat_json({"answer_choice": key % 4 + 1 if qid == "guard" else key,
                           "explanation_md": text, "confidence": "high"})


def _eval(live_dsn: str, model: fake.FakeOpenAI, *args: str
          ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WORKER_", "OPENAI_", "PROMPT_")) and k != "DATABASE_URL"}
    env.update({
        "DATABASE_URL": live_dsn, "OPENAI_BASE_URL": model.base_url,
        "OPENAI_API_KEY": "test-key", "WORKER_LLM_MODEL": "fake-model",
        "WORKER_EMBED_BASE_URL": model.base_url, "WORKER_EMBED_MODEL": "fake-embed",
        "WORKER_RETRY_BASE": "0.1",
    })
    return subprocess.run([sys.executable, "-m", "worker", "eval", "explanations", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    path = tmp_path / "set.yaml"
    path.write_text(yaml.safe_dump(SET, allow_unicode=True), encoding="utf-8")
    return path


def test_the_report_counts_what_the_pipeline_did(dsn: str, labelled: Path) -> None:
    with fake.FakeOpenAI() as model:
        model.fallback["embeddings"] = responder()
        model.fallback["chat"] = _model
        result = _eval(dsn, model, "--set", str(labelled), "--verify", "record",
                       "--prompt-version", "2", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["questions"] == len(QUESTIONS)
    [run] = report["runs"]
    assert (run["model"], run["prompt_version"], run["verify"]) == ("fake-model", 2, "record")
    assert run["served_as"] == ["fake-model"]
    assert (run["n"], run["published"], run["publish_rate"]) == (5, 2, 0.4)
    assert run["outcomes"] == {"published": 2, "guard_fail": 1, "parse_fail": 1,
                               "truncated": 1}
    assert run["guard_refusals"] == {"answer_choice": 1}
    # solved blind: pub and guard agree with the key, long does not (record: still published)
    assert (run["blind_checked"], run["blind_agreed"]) == (3, 2)
    # the parse failure was retried once (max_attempts 2), each attempt with its repair round
    assert (run["parse_fail_attempts"], run["parse_fail_final"]) == (2, 1)
    assert run["truncated"] == 1
    assert run["failed_attempts"] == {"parse_fail": 2, "guard_fail": 1, "truncated": 1}
    assert (run["capped"], run["cap_rate"]) == (1, 0.5)
    assert (run["citations_per_published"], run["published_citing"]) == (1.5, 2)
    # every chat round trip counted: 2 (+ blind) for pub, long, guard; 4 for parse; 1 for trunc
    assert (run["prompt_tokens"], run["completion_tokens"]) == (44.0, 22.0)
    assert run["latency_mean_s"] is not None and run["latency_p95_s"] is not None
    assert [s["id"] for s in run["samples"]] == ["pub", "long"]
    assert run["samples"][1]["text"].endswith("…") and len(run["samples"][1]["text"]) <= 1200

    # the live database got nothing, and the scratch database is gone
    for table in ("queue.jobs", "queue.model_calls", "queue.attempts", "app.questions",
                  "app.documents"):
        assert testdb.one(dsn, f"SELECT count(*) FROM {table}") == 0, table
    assert testdb.one(dsn, "SELECT count(*) FROM pg_database WHERE datname = 'worker_eval'") == 0


def test_the_text_report_names_each_run(dsn: str, labelled: Path) -> None:
    with fake.FakeOpenAI() as model:
        model.fallback["embeddings"] = responder()
        model.fallback["chat"] = _model
        result = _eval(dsn, model, "--set", str(labelled), "--limit", "2",
                       "--prompt-version", "1", "--prompt-version", "2", "--samples", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "eval explanations: “fake set”, 2 question(s), verify off" in out
    assert "fake-model, prompt v1" in out and "fake-model, prompt v2" in out
    assert out.count("· [pub]") == 2 and "· [long]" not in out


def test_a_bad_set_is_one_clear_error_and_exit_2(dsn: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    broken: dict[str, Any] = {**SET, "questions": [{**SET["questions"][0], "answer": 5}]}
    bad.write_text(yaml.safe_dump(broken, allow_unicode=True), encoding="utf-8")
    with fake.FakeOpenAI() as model:
        result = _eval(dsn, model, "--set", str(bad))
        assert model.bodies("chat") == []
    assert result.returncode == 2, result.stdout + result.stderr
    assert "questions.0.answer" in result.stderr and "Traceback" not in result.stderr
    assert testdb.one(dsn, "SELECT count(*) FROM pg_database WHERE datname = 'worker_eval'") == 0


def test_a_limit_below_one_is_a_usage_error(dsn: str) -> None:
    with fake.FakeOpenAI() as model:
        result = _eval(dsn, model, "--limit", "0")
    assert result.returncode == 2
    assert "--limit: must be at least 1" in result.stderr
