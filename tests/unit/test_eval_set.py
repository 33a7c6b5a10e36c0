"""The labelled set of `worker eval explanations`: YAML and JSONL read alike, and a bad file is
one clear SetError that says where; the report's percentile."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.evaluation.labelled_set import DEFAULT_SET, SetError, load
from worker.evaluation.report import CITATION, p95


def _jsonl(path: Path, data: dict[str, Any]) -> Path:
    lines = [{"type": "set", "name": data["name"], "course": data["course"]}]
    lines += [{"type": "document", **d} for d in data["documents"]]
    lines += [{"type": "question", **q} for q in data["questions"]]
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n\n",
                    encoding="utf-8")
    return path


def test_the_shipped_set_is_valid_and_spreads_its_keys() -> None:
    shipped = load(DEFAULT_SET)
    assert len(shipped.questions) >= 10 and len(shipped.documents) >= 2
    assert {q.answer for q in shipped.questions} == {1, 2, 3, 4}
    assert len({q.topic for q in shipped.questions}) >= 2
    assert shipped.limited(3).questions == shipped.questions[:3]


def test_jsonl_and_yaml_give_the_same_set(tmp_path: Path) -> None:
    data = yaml.safe_load(DEFAULT_SET.read_text(encoding="utf-8"))
    assert load(_jsonl(tmp_path / "set.jsonl", data)) == load(DEFAULT_SET)


@pytest.mark.parametrize(("text", "suffix", "where"), [
    ("questions: [", ".yaml", "not valid YAML"),
    ("- just a list", ".yaml", "a mapping with `questions`"),
    ("questions: []", ".yaml", "questions: List should have at least 1 item"),
    ("questions:\n  - {id: a, question_text: q, choices: [1, 2, 3], answer: 1}", ".yaml",
     "questions.0.choices"),
    ("questions:\n  - {id: a, question_text: q, choices: [w, x, y, z], answer: 0}", ".yaml",
     "questions.0.answer"),
    ("questions:\n  - {id: a, question_text: q, choices: [w, x, y, z], answer: 1}\n"
     "  - {id: a, question_text: r, choices: [w, x, y, z], answer: 2}", ".yaml",
     "repeated: a"),
    ('{"type": "question", "id": "a"}\nnot json\n', ".jsonl", "set.jsonl:2:"),
    ('{"type": "answer"}\n', ".jsonl", "set.jsonl:1:"),
])
def test_a_bad_set_says_what_and_where(tmp_path: Path, text: str, suffix: str,
                                       where: str) -> None:
    path = tmp_path / f"set{suffix}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SetError) as caught:
        load(path)
    assert where in str(caught.value)


def test_a_missing_file_is_a_set_error(tmp_path: Path) -> None:
    with pytest.raises(SetError, match="cannot read"):
        load(tmp_path / "nope.yaml")


def test_p95_is_the_nearest_rank_and_citations_are_counted() -> None:
    assert p95([]) is None
    assert p95([3.0]) == 3.0
    assert p95([float(n) for n in range(1, 21)]) == 19.0
    assert len(CITATION.findall("[자료 1]과 [자료2], 그리고 [자료 12]; [자료] 아님")) == 3
