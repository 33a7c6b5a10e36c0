"""A labelled question set for `python -m worker eval explanations`: study material, four-choice
questions and their keys, read from YAML or JSONL and checked once at the door.

The schema is documented in docs/explanations.md ("Evaluating models and prompt versions").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from worker.errors import WorkerError
from worker.paths import DATA_ROOT

# in a checkout the top-level data/eval/; in a wheel its copy under worker/_data/
DEFAULT_SET = DATA_ROOT / "data" / "eval" / "explanations_ko.yaml"

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
_STRICT = ConfigDict(frozen=True, extra="forbid")


class SetError(WorkerError):
    """The labelled set cannot be used: unreadable, not YAML/JSONL, or not the schema."""


class Document(BaseModel):
    """Study material of the set's course: a title, an optional summary, its chunks."""

    model_config = _STRICT

    title: Text
    summary: str | None = None
    chunks: list[Text] = Field(min_length=1)


class Question(BaseModel):
    """A four-choice question and its key (1-4); `id` names it in the report."""

    model_config = _STRICT

    id: Text
    question_text: Text
    choices: list[Text] = Field(min_length=4, max_length=4)
    answer: int = Field(ge=1, le=4)
    topic: str | None = None


class LabelledSet(BaseModel):
    """A whole set: one course's material and its questions, ids unique."""

    model_config = _STRICT

    name: Text = "labelled set"
    course: Text = "evaluation course"
    documents: list[Document] = Field(default_factory=list)
    questions: list[Question] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> LabelledSet:
        ids = [question.id for question in self.questions]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"question ids must be unique; repeated: {', '.join(duplicates)}")
        return self

    def limited(self, limit: int | None) -> LabelledSet:
        """The set with only its first `limit` questions (all of them for None)."""
        if limit is None:
            return self
        return self.model_copy(update={"questions": self.questions[:limit]})


class _Line(BaseModel):
    """One JSONL record: `{"type": "set"|"document"|"question", …the fields of that part}`."""

    model_config = ConfigDict(frozen=True, extra="allow")

    type: Literal["set", "document", "question"]


def load(path: Path) -> LabelledSet:
    """The set in `path` (`.jsonl` is JSON Lines, anything else YAML); SetError says what is
    wrong and where."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SetError(f"{path}: cannot read the labelled set: {exc}") from exc
    data = _jsonl(path, text) if path.suffix == ".jsonl" else _yaml(path, text)
    try:
        return LabelledSet.model_validate(data)
    except ValidationError as exc:
        raise SetError(f"{path}: not a labelled set:\n{_problems(exc)}") from None


def _yaml(path: Path, text: str) -> object:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SetError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SetError(f"{path}: a labelled set is a mapping with `questions` (and `documents`)")
    return data


def _jsonl(path: Path, text: str) -> dict[str, Any]:
    data: dict[str, Any] = {"documents": [], "questions": []}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = _Line.model_validate(json.loads(line))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise SetError(f"{path}:{number}: not a set, document or question record "
                           f"({_first(exc)})") from None
        fields = dict(record.model_extra or {})
        if record.type == "set":
            data.update(fields)
        else:
            data[f"{record.type}s"].append(fields)
    return data


def _first(exc: json.JSONDecodeError | ValidationError) -> str:
    if isinstance(exc, ValidationError):
        return _problems(exc).splitlines()[0].strip()
    return exc.msg


def _problems(exc: ValidationError) -> str:
    """One line per problem: where in the set, and what is wrong (never a whole traceback)."""
    return "\n".join(f"  {'.'.join(str(p) for p in error['loc']) or '(top)'}: {error['msg']}"
                     for error in exc.errors())
