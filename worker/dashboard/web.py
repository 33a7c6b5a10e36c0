"""What every page and action of the dashboard uses: the named queries' rows, the page
template with the session's state, and the fixed texts an action's redirect shows.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from worker.dashboard.auth import Guard
from worker.queries import q

# what a redirect after an action says on the page it lands on (fixed texts: nothing of the
# request is echoed)
DONE = {
    "requeued": "Requeued: this is the job's new pending run.",
    "requeue_nothing": "The job is pending already; it is due now.",
    "cancelled": "Cancelled.",
    "not_cancelled": "The job had already finished; nothing changed.",
    "paused": "Paused: no worker claims this kind until it is resumed.",
    "already_paused": "That kind was paused already.",
    "resumed": "Resumed: its workers were woken.",
    "not_paused": "That kind was not paused.",
    "explain_pending": "Queued: a worker will explain the question.",
    "explain_ready": "The explanation is ready; no model call (Regenerate asks for a new one).",
    "explain_stale": "The explanation is stale and kept; Regenerate asks for a new one.",
    "signed_in": "Signed in: the buttons work for this browser session.",
    "signed_out": "Signed out.",
}


async def rows(request: Request, name: str, **params: Any) -> list[dict[str, Any]]:
    """The rows of the named query (sql/queries/dashboard.sql and the CLI's)."""
    pool: AsyncConnectionPool[AsyncConnection[DictRow]] = request.app.state.pool
    async with pool.connection() as conn:
        cursor = await conn.execute(q(name), params)
        return await cursor.fetchall()


def page(request: Request, template: str, status_code: int = 200,
         **context: Any) -> HTMLResponse:
    """A page with what every page needs: the guard's state and this session's CSRF token."""
    guard: Guard = request.app.state.guard
    session = guard.session(request)
    base = {"actions": guard.actions, "signed_in": session is not None,
            "csrf": guard.csrf(session) if session else "",
            "done": DONE.get(request.query_params.get("done", "")),
            "read_only": guard.read_only, "has_token": guard.token is not None}
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(request, template, {**base, **context},
                                      status_code=status_code)
