"""The console's web application: Starlette routes over a read-only ConsoleContext.

Why Starlette: a small, well-kept ASGI toolkit (routing, responses, streaming for the live tail, static files)
with no ORM or template engine forced on us; Jinja2 renders the pages (autoescaped); uvicorn serves them with
TLS and client certificates (serving.py). Pages are rendered on the server, so every view is a URL (the query is
in it) and works without scripts; scripts only add what must run in the browser: verification (verify.js, the
auditor trusts the key, not this server), the live tail and the verifier-key box (console.js).

Security: read-only (GET only, but the token login); a strict Content-Security-Policy (no inline script, nothing
from other origins: air-gapped users need no CDN); when a bearer token is configured every request needs it (the
``Authorization`` header, or the cookie the login form sets). Errors map to HTTP statuses in one place,
:func:`http_status`.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from authz_ledger.console import api, fleet_pages, pages, replay_page
from authz_ledger.console.context import ConsoleContext
from authz_ledger.console.fleet import Fleet
from authz_ledger.errors import (
    AuthzLedgerError,
    InvalidRequestError,
    LedgerCorruptError,
    NotFoundError,
    OutOfRangeError,
    ProofError,
)

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
COOKIE = "authz_ledger_console"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def http_status(err: AuthzLedgerError) -> int:
    """The one map from the error tree to HTTP statuses for the console."""
    if isinstance(err, InvalidRequestError | ProofError):
        return 400
    if isinstance(err, NotFoundError):
        return 404
    if isinstance(err, OutOfRangeError):
        return 409
    if isinstance(err, LedgerCorruptError):
        return 500
    return 503


def templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["outcome_class"] = {"allow": "allow", "deny": "deny", "error": "error"}.get
    return env


class _Guard(BaseHTTPMiddleware):
    """Security headers on every answer; the bearer token, when one is configured, on every request."""

    def __init__(self, app: object, token: str, secure_cookie: bool) -> None:
        super().__init__(app)  # type: ignore[arg-type]
        self.token = token
        self.secure_cookie = secure_cookie

    def _authorised(self, request: Request) -> bool:
        if not self.token:
            return True
        given = request.cookies.get(COOKIE, "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())

    async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.url.path == "/login":
            response = await self._login(request)
        elif not self._authorised(request):
            response = pages.login_page(request, status_code=401)
        else:
            response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    async def _login(self, request: Request) -> Response:
        if request.method != "POST":
            return pages.login_page(request)
        form = await request.form()
        token = str(form.get("token", ""))
        if not self.token or not hmac.compare_digest(token.encode(), self.token.encode()):
            return pages.login_page(request, status_code=401, failed=True)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=self.secure_cookie)
        return response


async def _error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AuthzLedgerError)
    status = http_status(exc)
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": str(exc)}, status_code=status)
    return pages.error_page(request, str(exc), status)


def build_app(
    ctx: ConsoleContext, *, token: str = "", secure_cookie: bool = False, fleet: Fleet | None = None
) -> Starlette:
    """The console for one ledger, or with ``fleet`` for several shards (``ctx`` its first); ``token`` non-empty
    requires it on every request."""
    app = Starlette(
        routes=[
            Route("/", pages.search_page if fleet is None else fleet_pages.search_page),
            Route("/entry/{index:int}", pages.entry_page),
            Route("/stats", pages.stats_page),
            Route("/verify", pages.verify_page),
            Route("/replay", replay_page.replay_page),
            Route("/login", pages.login_route, methods=["GET", "POST"]),
            Route("/api/search", api.search_json),
            Route("/api/entry/{index:int}", api.entry),
            Route("/api/entry/{index:int}/raw", api.entry_raw),
            Route("/api/proof/{index:int}", api.inclusion),
            Route("/api/receipt/{index:int}", api.receipt),
            Route("/api/checkpoint", api.checkpoint),
            Route("/api/replay.json", replay_page.replay_json),
            Route("/api/tail", api.tail),
            Route("/healthz", api.healthz),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        middleware=[Middleware(_Guard, token=token, secure_cookie=secure_cookie)],
        exception_handlers={AuthzLedgerError: _error},
    )
    app.state.ctx = ctx
    app.state.fleet = fleet
    app.state.templates = templates()
    return app
