"""The stored weakness analysis: the history of analyses is the record, and the course-level
lists of weaknesses and suggestions are derived from it on every merge."""

from __future__ import annotations

import json
import re
from typing import Any

from worker.kinds.textcap import clip

FORMAT = 1
# analyses kept in the stored history; past it the oldest superseded ones go first, then the
# oldest, so the column stays far below jsonb's limit however many quizzes a course has
MAX_HISTORY = 100
# a stored value larger than this, or nested deeper than a JSON decoder goes, is not decoded
MAX_STORED_CHARS = 16 * 1024 * 1024
MAX_STORED_DEPTH = 64
EXCERPT_CHARS = 2_000
# the existing analysis reaches the prompt only as its top topics, whatever the history size
SUMMARY_MAX_TOPICS = 12
SUMMARY_MAX_CHARS = 800
TOPIC_CHARS, TEXT_CHARS = 80, 400
AGGREGATE_EVIDENCE, AGGREGATE_SUGGESTIONS = 5, 20
RANK: dict[str, int] = {"high": 3, "medium": 2, "low": 1}
# small local models sometimes answer in Korean despite the enum
_SEVERITY_WORDS = {"높음": "high", "상": "high", "중간": "medium", "보통": "medium",
                   "중": "medium", "낮음": "low", "하": "low"}


def severity_of(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    word = value.strip().lower()
    return word if word in RANK else _SEVERITY_WORDS.get(word)


def summarize(analysis: dict[str, Any], max_topics: int = SUMMARY_MAX_TOPICS,
              max_chars: int = SUMMARY_MAX_CHARS) -> tuple[str, int]:
    """The existing analysis as the prompt sees it: its strongest topics, one line each,
    capped in count and characters. Returns the text and how many topics it names."""
    lines: list[str] = []
    used = 0
    for item in analysis["weaknesses"][:max_topics]:
        line = f"- {clip(item['topic'], 60)} ({item['severity']}, {item['occurrences']}회)"
        if used + len(line) + 1 > max_chars:
            break
        lines.append(line)
        used += len(line) + 1
    if not lines:
        return "(없음: 이 과목의 첫 분석입니다)", 0
    named = len(lines)
    if len(analysis["weaknesses"]) > named:
        lines.append(f"- … 그 밖에 {len(analysis['weaknesses']) - named}개")
    return "\n".join(lines), named


# -- the stored analysis: history is the record, the top-level lists are derived from it ------


def topic_key(topic: str) -> str:
    """Spacing and punctuation vary between analyses ("변압기 손실", "변압기손실")."""
    return re.sub(r"[\W_]+", "", topic).casefold()


def _first_text(item: dict[str, Any], keys: tuple[str, ...]) -> str:
    for key in keys:
        if isinstance(item.get(key), str) and item[key].strip():
            return " ".join(item[key].split())
    return ""


def _legacy_entry(value: object) -> dict[str, Any]:
    """An analysis stored before the history existed (a flat {weaknesses, suggestions}, or anything
    else found in the column), kept verbatim under `original` and read as best it can be."""
    flat = value if isinstance(value, dict) else {}

    def listed(key: str) -> list[Any]:
        found = flat.get(key)
        return found if isinstance(found, list) else []

    weaknesses = []
    for item in listed("weaknesses"):
        row = item if isinstance(item, dict) else {"topic": item}
        topic = _first_text(row, ("topic", "name", "title", "weakness", "area"))
        if topic:
            weaknesses.append({
                "topic": clip(topic, TOPIC_CHARS),
                "severity": severity_of(row.get("severity") or row.get("level")) or "medium",
                "evidence": clip(_first_text(row, ("evidence", "description", "detail",
                                                   "reason")), TEXT_CHARS),
                "question_ids": []})
    suggestions = []
    for item in listed("suggestions"):
        row = item if isinstance(item, dict) else {"text": item}
        text = _first_text(row, ("text", "suggestion", "content", "description", "title"))
        if text:
            suggestions.append({"text": clip(text, TEXT_CHARS), "topics": []})
    analyzed_at = flat.get("analyzed_at")
    return {"source": "legacy", "quiz_id": None, "job_id": None,
            "analyzed_at": str(analyzed_at) if analyzed_at is not None else None,
            "prompt_version": None, "model": None, "wrong_answers": None,
            "weaknesses": weaknesses, "suggestions": suggestions, "superseded_by_job": None,
            "original": value}


class Unreadable:
    """A stored value the worker will not decode, and why; it becomes a legacy entry that
    keeps an excerpt of it."""

    def __init__(self, reason: str, text: str) -> None:
        self.reason = reason
        self.excerpt = text[:EXCERPT_CHARS]


def read_stored(text: str | None) -> object:
    """The stored column, read as text: its value, or Unreadable when it is too large or
    nested too deep to decode (jsonb accepts both)."""
    if text is None:
        return None
    if len(text) > MAX_STORED_CHARS:
        return Unreadable(f"too large to read: {len(text)} characters", text)
    try:
        value = json.loads(text)
    except RecursionError:
        return Unreadable("nested too deep to decode", text)
    if _deeper_than(value, MAX_STORED_DEPTH):
        # it would decode, but not encode again inside the history
        return Unreadable(f"nested more than {MAX_STORED_DEPTH} levels deep", text)
    return value


def _deeper_than(value: object, limit: int) -> bool:
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return False


def _unreadable_entry(value: Unreadable) -> dict[str, Any]:
    return {"source": "legacy", "quiz_id": None, "job_id": None, "analyzed_at": None,
            "prompt_version": None, "model": None, "wrong_answers": None,
            "weaknesses": [], "suggestions": [], "superseded_by_job": None,
            "original": None, "unreadable": value.reason, "excerpt": value.excerpt}


def normalize(existing: object) -> dict[str, Any]:
    """The stored column in this kind's format; an older or foreign value becomes one
    legacy history entry, so nothing that was stored is lost."""
    if existing is None:
        return rebuild([])
    if isinstance(existing, Unreadable):
        return rebuild([_unreadable_entry(existing)])
    if (isinstance(existing, dict) and existing.get("format") == FORMAT
            and isinstance(existing.get("history"), list)):
        return rebuild([dict(e) if isinstance(e, dict) else e for e in existing["history"]])
    return rebuild([_legacy_entry(existing)])


def _items(entry: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = entry.get(key)
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def rebuild(history: list[Any]) -> dict[str, Any]:
    """The course-level view of a history: every topic of the active entries (a quiz's
    superseded analyses do not count), strongest first, and the newest suggestions."""
    active = [e for e in history if isinstance(e, dict) and not e.get("superseded_by_job")]
    topics: dict[str, dict[str, Any]] = {}
    last: dict[str, int] = {}
    for index, entry in enumerate(active):
        seen: set[str] = set()
        for item in _items(entry, "weaknesses"):
            topic = item.get("topic")
            if not isinstance(topic, str) or not topic_key(topic):
                continue
            key = topic_key(topic)
            agg = topics.setdefault(key, {
                "topic": topic, "severity": "medium", "occurrences": 0, "quiz_ids": [],
                "evidence": [], "first_seen_at": entry.get("analyzed_at"),
                "last_seen_at": None})
            # the latest analysis naming a topic says how it stands now
            agg.update(topic=topic, severity=severity_of(item.get("severity")) or "medium",
                       last_seen_at=entry.get("analyzed_at"))
            if key not in seen:
                agg["occurrences"] += 1
                seen.add(key)
            quiz_id = entry.get("quiz_id")
            if quiz_id is not None and quiz_id not in agg["quiz_ids"]:
                agg["quiz_ids"].append(quiz_id)
            if isinstance(item.get("evidence"), str) and item["evidence"]:
                agg["evidence"] = [*agg["evidence"], item["evidence"]][-AGGREGATE_EVIDENCE:]
            last[key] = index
    weaknesses = sorted(topics, key=lambda k: (-RANK[topics[k]["severity"]],
                                               -topics[k]["occurrences"], -last[k]))
    suggestions: list[dict[str, Any]] = []
    seen_texts: set[str] = set()
    for entry in reversed(active):
        for item in _items(entry, "suggestions"):
            text = item.get("text")
            if not isinstance(text, str) or topic_key(text) in seen_texts:
                continue
            seen_texts.add(topic_key(text))
            suggestions.append({"text": text, "topics": item.get("topics") or [],
                                "quiz_id": entry.get("quiz_id"),
                                "analyzed_at": entry.get("analyzed_at")})
    dated = [e.get("analyzed_at") for e in history if isinstance(e, dict)]
    return {"format": FORMAT, "weaknesses": [topics[k] for k in weaknesses],
            "suggestions": suggestions[:AGGREGATE_SUGGESTIONS],
            "analyzed_at": dated[-1] if dated else None, "history": history}


def merge(existing: object, entry: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Add one quiz's analysis to the stored one. An earlier analysis of the same quiz (it
    was regraded, or requeued) stays in the history, marked superseded. Returns the new
    value and how many entries this superseded."""
    history = normalize(existing)["history"]
    superseded = 0
    for old in history:
        if (isinstance(old, dict) and old.get("source") == "quiz"
                and old.get("quiz_id") == entry["quiz_id"] and not old.get("superseded_by_job")):
            old["superseded_by_job"] = entry["job_id"]
            superseded += 1
    return rebuild(_bounded([*history, entry])), superseded


def _bounded(history: list[Any]) -> list[Any]:
    """At most MAX_HISTORY entries: the oldest superseded ones are dropped first, then the
    oldest of the rest."""
    excess = len(history) - MAX_HISTORY
    if excess <= 0:
        return history
    superseded = [i for i, e in enumerate(history)
                  if isinstance(e, dict) and e.get("superseded_by_job")]
    drop = set(superseded[:excess])
    drop |= set([i for i in range(len(history)) if i not in drop][:excess - len(drop)])
    return [entry for i, entry in enumerate(history) if i not in drop]
