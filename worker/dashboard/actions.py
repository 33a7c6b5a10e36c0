"""The dashboard's buttons (POST only): requeue, cancel, pause, resume and request an
explanation, each one call of the SQL function the CLI and the application call; and sign-in.

Every action passes the guard first (token session, CSRF token, same origin) and is logged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import psycopg
import structlog
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from worker.dashboard.auth import COOKIE, Guard, local_path, same_origin
from worker.dashboard.web import rows

log = structlog.get_logger("worker.dashboard")

Action = Callable[[Request, FormData], Awaitable[str]]


def _guarded(action: Action) -> Callable[[Request], Awaitable[Response]]:
    """`action` behind the guard; it returns where to go next. The database's refusals
    become pages that say why."""

    async def endpoint(request: Request) -> Response:
        form = await request.form()
        guard: Guard = request.app.state.guard
        csrf = form.get("csrf")
        refusal = guard.refusal(request, csrf if isinstance(csrf, str) else None)
        if refusal:
            log.warning("dashboard_action_refused", path=request.url.path, reason=refusal)
            raise HTTPException(403, refusal)
        try:
            target = await action(request, form)
        except (psycopg.errors.ObjectInUse, psycopg.errors.NoDataFound,
                psycopg.errors.RaiseException, psycopg.errors.DataException) as exc:
            code = 404 if isinstance(exc, psycopg.errors.NoDataFound) else 409
            raise HTTPException(code, exc.diag.message_primary or type(exc).__name__) from None
        log.info("dashboard_action", path=request.url.path)
        return RedirectResponse(target, status_code=303)

    return endpoint


def _field(form: FormData, name: str, limit: int = 200) -> str | None:
    value = form.get(name)
    if not isinstance(value, str) or not value.strip():
        return None
    if len(value) > limit:
        raise HTTPException(400, f"{name} is too long")
    return value.strip()


async def requeue(request: Request, form: FormData) -> str:
    job_id = int(request.path_params["job_id"])
    found = await rows(request, "requeue", job_id=job_id)
    new = found[0]["job_id"] if found else None
    if new is None or new == job_id:
        return f"/jobs/{job_id}?done=requeue_nothing"
    return f"/jobs/{new}?done=requeued"


async def cancel(request: Request, form: FormData) -> str:
    job_id = int(request.path_params["job_id"])
    found = await rows(request, "cancel", job_id=job_id)
    done = "cancelled" if found and found[0]["cancelled"] else "not_cancelled"
    return f"/jobs/{job_id}?done={done}"


async def pause(request: Request, form: FormData) -> str:
    kind = _field(form, "kind")
    if kind is None:
        raise HTTPException(400, "which kind?")
    found = await rows(request, "pause", kind=kind, reason=_field(form, "reason", 500))
    return "/?done=" + ("paused" if found and found[0]["paused"] else "already_paused")


async def resume(request: Request, form: FormData) -> str:
    kind = _field(form, "kind")
    if kind is None:
        raise HTTPException(400, "which kind?")
    found = await rows(request, "resume", kind=kind)
    return "/?done=" + ("resumed" if found and found[0]["resumed"] else "not_paused")


async def explain(request: Request, form: FormData) -> str:
    question_id = int(request.path_params["question_id"])
    found = await rows(request, "dash_request_explanation", question_id=question_id,
                       regenerate=_field(form, "regenerate") == "1")
    status = found[0]["status"] if found else "pending"
    return f"/questions/{question_id}?done=explain_{status}"


async def login(request: Request) -> Response:
    """A good token opens a session: a signed, HttpOnly, SameSite=Strict cookie."""
    form = await request.form()
    guard: Guard = request.app.state.guard
    token = form.get("token")
    if not same_origin(request):
        raise HTTPException(403, "the sign-in did not come from this dashboard's own page")
    if not guard.actions:
        raise HTTPException(403, "actions are off (read-only mode, or no "
                                 "WORKER_DASHBOARD_TOKEN); there is nothing to sign in to")
    if not isinstance(token, str) or not guard.token_matches(token):
        log.warning("dashboard_sign_in_refused")
        raise HTTPException(403, "wrong token")
    target = local_path(_field(form, "next"))
    response = RedirectResponse(target + ("&" if "?" in target else "?") + "done=signed_in",
                                status_code=303)
    response.set_cookie(COOKIE, guard.new_cookie(), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    log.info("dashboard_signed_in")
    return response


async def logout(request: Request) -> Response:
    if not same_origin(request):
        raise HTTPException(403, "the sign-out did not come from this dashboard's own page")
    response = RedirectResponse("/?done=signed_out", status_code=303)
    response.delete_cookie(COOKIE)
    return response


ROUTES = [
    Route("/jobs/{job_id:int}/requeue", _guarded(requeue), methods=["POST"], name="requeue"),
    Route("/jobs/{job_id:int}/cancel", _guarded(cancel), methods=["POST"], name="cancel"),
    Route("/kinds/pause", _guarded(pause), methods=["POST"], name="pause"),
    Route("/kinds/resume", _guarded(resume), methods=["POST"], name="resume"),
    Route("/questions/{question_id:int}/explain", _guarded(explain), methods=["POST"],
          name="explain"),
    Route("/login", login, methods=["POST"], name="login"),
    Route("/logout", logout, methods=["POST"], name="logout"),
]
