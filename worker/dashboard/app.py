"""The dashboard's Starlette application: its connection pool, templates, routes and the
error pages; the pages themselves are in pages.py and the buttons in actions.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.config import Settings
from worker.dashboard import actions, pages
from worker.dashboard.auth import Guard
from worker.dashboard.render import FILTERS
from worker.dashboard.web import page
from worker.queries import q

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Gate:
    """The model gate as the Models page shows it (worker status shows the same)."""

    name: str
    capacity: int
    cross_process: bool


def _gate(settings: Settings) -> Gate:
    models = settings.models
    return Gate(models.llm_gate_name or models.chat_endpoint(), models.llm_gate_capacity,
                models.llm_gate_cross_process)


# no script at all, nothing from elsewhere, forms post only here, never inside a frame (so a
# page of another site cannot overlay the buttons)
HEADERS = [
    (b"content-security-policy", b"default-src 'none'; style-src 'self'; img-src 'self'; "
                                 b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    """Adds HEADERS to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(settings: Settings, dsn: str) -> Starlette:
    """The dashboard on `dsn`; its connections act as settings.dashboard_role."""
    token = settings.dashboard_token.get_secret_value() if settings.dashboard_token else None
    role = settings.dashboard_role

    async def configure(conn: AsyncConnection[DictRow]) -> None:
        if role:
            await conn.execute(q("dash_set_role"), {"role": role})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # prepare_threshold=None: every statement is planned with its values, so a NULL
        # filter folds away and the plan uses the list's index
        pool = AsyncConnectionPool(
            dsn, connection_class=AsyncConnection[DictRow], open=False, min_size=1,
            max_size=4, configure=configure, name="dashboard",
            kwargs={"autocommit": True, "row_factory": dict_row, "prepare_threshold": None})
        await pool.open(wait=True, timeout=30)
        app.state.pool = pool
        try:
            yield
        finally:
            await pool.close()

    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters.update(FILTERS)
    app = Starlette(routes=[*pages.ROUTES, *actions.ROUTES,
                            Mount("/static", StaticFiles(directory=HERE / "static"),
                                  name="static")],
                    lifespan=lifespan, middleware=[Middleware(SecurityHeaders)],
                    exception_handlers={HTTPException: _http_error,
                                        psycopg.errors.InsufficientPrivilege: _db_refused,
                                        psycopg.errors.DataException: _bad_value})
    app.state.templates = templates
    app.state.guard = Guard(token, settings.dashboard_read_only)
    app.state.page_size = settings.dashboard_page_size
    app.state.gate = _gate(settings)
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return page(request, "error.html", status_code=exc.status_code, title=str(exc.status_code),
                message=exc.detail)


async def _db_refused(request: Request, exc: Exception) -> Response:
    return page(request, "error.html", status_code=403, title="403",
                message="the dashboard's database role may not do that "
                        f"({type(exc).__name__}); see docs/dashboard.md, The role")


async def _bad_value(request: Request, exc: Exception) -> Response:
    # e.g. a job id past bigint in the path
    return page(request, "error.html", status_code=400, title="400",
                message=f"the database refused a value of this request ({type(exc).__name__})")
