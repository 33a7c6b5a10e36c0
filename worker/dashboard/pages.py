"""The dashboard's pages (GET only): queue, failures, jobs, one job, models, content, a course,
a question, and the sign-in form. Each reads named queries; every list takes a keyset cursor.
"""

from __future__ import annotations

import datetime
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from worker.dashboard.web import page, rows
from worker.models.gate import lock_class

STATUSES = ("pending", "running", "completed", "failed", "skipped", "cancelled")
EXPLANATION_STATES = ("none", "pending", "ready", "stale", "failed", "skipped")
WINDOWS = ("1 hour", "24 hours", "7 days", "30 days")
MODEL_DAYS = 14


def _int(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except ValueError:
        raise HTTPException(400, f"{name} must be a whole number") from None
    if not 0 <= number <= 2**63 - 1:
        raise HTTPException(400, f"{name} is out of range")
    return number


def _choice(request: Request, name: str, choices: tuple[str, ...]) -> str | None:
    value = request.query_params.get(name) or None
    if value is not None and value not in choices:
        raise HTTPException(400, f"{name} must be one of {', '.join(choices)}")
    return value


def _text(request: Request, name: str) -> str | None:
    value = request.query_params.get(name) or None
    if value is not None and len(value) > 200:
        raise HTTPException(400, f"{name} is too long")
    return value


def _timestamp(request: Request, name: str) -> datetime.datetime | None:
    value = request.query_params.get(name)
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value)
    except ValueError:
        raise HTTPException(400, f"{name} must be an ISO 8601 timestamp") from None


def _limit(request: Request) -> int:
    size: int = request.app.state.page_size
    return size


async def queue(request: Request) -> Response:
    gate = request.app.state.gate
    held = None
    if gate.cross_process:
        found = await rows(request, "gate_slots_held", classid=lock_class(gate.name) & 0xFFFFFFFF)
        held = found[0]["held"] if found else 0
    return page(request, "queue.html", nav="queue",
                active=await rows(request, "dash_active"),
                finished=await rows(request, "dash_finished"),
                workers=await rows(request, "live_workers"),
                paused=await rows(request, "paused_kinds"),
                failures=await rows(request, "recent_failures", since="1 hour"),
                gate=gate, held=held)


async def failures(request: Request) -> Response:
    since = _choice(request, "since", WINDOWS) or "24 hours"
    kind, code = _text(request, "kind"), _text(request, "error_code")
    limit = _limit(request)
    found = await rows(request, "dash_failures", kind=kind, error_code=code, limit=limit + 1,
                       before_at=_timestamp(request, "before_at"),
                       before_id=_int(request, "before_id"))
    more = found[limit] if len(found) > limit else None
    listed = found[:limit]
    after = listed[-1] if more else None
    return page(request, "failures.html", nav="failures", since=since, windows=WINDOWS,
                kind=kind, error_code=code, failures=listed, next_cursor=after,
                groups=await rows(request, "dash_failure_groups", since=since))


async def jobs(request: Request) -> Response:
    status = _choice(request, "status", STATUSES)
    kind = _text(request, "kind")
    limit = _limit(request)
    found = await rows(request, "dash_jobs", status=status, kind=kind,
                       before=_int(request, "before"), limit=limit + 1)
    listed = found[:limit]
    return page(request, "jobs.html", nav="jobs", status=status, kind=kind, statuses=STATUSES,
                jobs=listed, next_before=listed[-1]["id"] if len(found) > limit else None)


async def job(request: Request) -> Response:
    job_id = int(request.path_params["job_id"])
    found = await rows(request, "dash_job", id=job_id)
    if not found:
        raise HTTPException(404, f"no job {job_id}")
    return page(request, "job.html", nav="jobs", job=found[0],
                attempts=await rows(request, "dash_job_attempts", id=job_id),
                calls=await rows(request, "dash_job_calls", id=job_id))


async def models(request: Request) -> Response:
    before = request.query_params.get("before")
    try:
        day = datetime.date.fromisoformat(before) if before else None
    except ValueError:
        raise HTTPException(400, "before must be a date (YYYY-MM-DD)") from None
    usage = await rows(request, "dash_model_days", before=day, days=MODEL_DAYS)
    end = day or datetime.datetime.now(datetime.UTC).date() + datetime.timedelta(days=1)
    totals = _totals(usage)
    return page(request, "models.html", nav="models", usage=usage, totals=totals,
                start=end - datetime.timedelta(days=MODEL_DAYS), end=end,
                older=(end - datetime.timedelta(days=MODEL_DAYS)).isoformat(),
                gate=request.app.state.gate)


def _totals(usage: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The window's calls, tokens and mean latency per kind."""
    per: dict[str, dict[str, Any]] = {}
    for row in usage:
        total = per.setdefault(row["kind"], {"kind": row["kind"], "calls": 0, "tokens": 0,
                                             "latency": 0.0, "gate_wait_ms": 0.0})
        total["calls"] += row["calls"]
        total["tokens"] += row["total_tokens"]
        total["latency"] += float(row["avg_latency_ms"] or 0) * row["calls"]
        total["gate_wait_ms"] += float(row["gate_wait_ms"] or 0)
    for total in per.values():
        total["avg_latency_ms"] = total["latency"] / total["calls"] if total["calls"] else None
    return sorted(per.values(), key=lambda t: t["kind"])


async def content(request: Request) -> Response:
    limit = _limit(request)
    found = await rows(request, "dash_courses", after=_int(request, "after"), limit=limit + 1)
    listed = found[:limit]
    return page(request, "content.html", nav="content", courses=listed,
                states=EXPLANATION_STATES,
                next_after=listed[-1]["id"] if len(found) > limit else None)


async def course(request: Request) -> Response:
    course_id = int(request.path_params["course_id"])
    found = await rows(request, "dash_course", id=course_id)
    if not found:
        raise HTTPException(404, f"no course {course_id}")
    status = _choice(request, "status", EXPLANATION_STATES)
    limit = _limit(request)
    questions = await rows(request, "dash_course_questions", course_id=course_id,
                           status=status, after=_int(request, "after"), limit=limit + 1)
    listed = questions[:limit]
    analysis = found[0]["analysis"] if isinstance(found[0]["analysis"], dict) else {}
    return page(request, "course.html", nav="content", course=found[0], analysis=analysis,
                history=await rows(request, "dash_course_history", id=course_id),
                questions=listed, status=status, states=EXPLANATION_STATES,
                next_after=listed[-1]["id"] if len(questions) > limit else None)


async def question(request: Request) -> Response:
    question_id = int(request.path_params["question_id"])
    found = await rows(request, "dash_question", id=question_id)
    if not found:
        raise HTTPException(404, f"no question {question_id}")
    return page(request, "question.html", nav="content", question=found[0],
                jobs=await rows(request, "dash_question_jobs", id=question_id))


async def login_form(request: Request) -> Response:
    return page(request, "login.html", nav="", next=request.query_params.get("next", "/"))


ROUTES = [
    Route("/", queue, name="queue"),
    Route("/failures", failures, name="failures"),
    Route("/jobs", jobs, name="jobs"),
    Route("/jobs/{job_id:int}", job, name="job"),
    Route("/models", models, name="models"),
    Route("/content", content, name="content"),
    Route("/courses/{course_id:int}", course, name="course"),
    Route("/questions/{question_id:int}", question, name="question"),
    Route("/login", login_form, name="login_form"),
]
