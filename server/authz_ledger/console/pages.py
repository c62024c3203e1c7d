"""The console's pages: find (search and live tail), read (one entry), see (rates and history), verify a receipt.

Every page is a URL that says everything it shows (``/?q=user:alice+outcome:deny&before=120``), so a link can be
shared with another auditor. Form fields for the common filters are folded into the same query text.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from jinja2 import Environment
from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from authz_ledger.console import charts, query, search
from authz_ledger.console.context import ConsoleContext
from authz_ledger.console.facts import Facts, facts_of
from authz_ledger.console.fleet import Fleet
from authz_ledger.errors import InvalidRequestError
from authz_ledger.ledger.store import u64
from authz_ledger.readside.values import iso_time

FILTERS = ("user", "outcome", "status", "method", "host", "path", "header", "version", "since", "until")
RANGES = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
_MARKER = re.compile(r"hmac-sha256(\+[a-z]+)?:[0-9a-f]{16,64}")


def render(request: Request, name: str, status_code: int = 200, **values: object) -> HTMLResponse:
    env: Environment = request.app.state.templates
    ctx: ConsoleContext = request.app.state.ctx
    fleet: Fleet | None = getattr(request.app.state, "fleet", None)
    # A console over several shards: which one this page is about (links keep it), and all of them.
    shards = {"shard": request.query_params.get("shard", "") if fleet else "", "shards": fleet.origins if fleet else []}
    html = env.get_template(name).render(request=request, vkeys=ctx.vkeys, **{**shards, **values})
    return HTMLResponse(html, status_code=status_code)


def ctx_of(request: Request, *, first_by_default: bool = False) -> ConsoleContext:
    """The ledger a request reads: the console's one, or in a fleet the shard ``?shard=`` names (fleet.py)."""
    fleet: Fleet | None = getattr(request.app.state, "fleet", None)
    if fleet is not None:
        return fleet.ctx_for(request.query_params.get("shard"), first_by_default=first_by_default)
    ctx: ConsoleContext = request.app.state.ctx
    return ctx


def row(f: Facts) -> dict[str, Any]:
    """What one result row shows (also the live tail's and /api/search's row)."""
    m = f.message
    return {
        "index": f.seq,
        "time": iso_time(f.time_ns) if m is not None else "",
        "outcome": f.outcome + ("*" if m is not None and m.dry_run else ""),
        "status": f.status or "",
        "method": f.method,
        "host": f.host,
        "principal": f.principal,
        "path": m.path if m is not None else "",
        "decision_id": f.decision_id,
        "error": m.error if m is not None else "entry bytes do not decode",
    }


def query_text(request: Request) -> str:
    """The search box and the filter fields, as one query text (the filters are the same keys)."""
    params = request.query_params
    parts = [params.get("q", "").strip()]
    for key in FILTERS:
        value = params.get(key, "").strip()
        if value:
            parts.append(f"{key}:{query.quote(value)}")
    return " ".join(p for p in parts if p)


async def search_page(request: Request) -> Response:
    ctx = ctx_of(request)
    text = query_text(request)
    before = int_param(request, "before")
    try:
        q = query.parse(text)
    except InvalidRequestError as e:
        return render(request, "search.html", 400, text=text, error=str(e), rows=[], page=None, **_status(ctx))
    page = search.search(ctx.index, q, before)
    return render(
        request,
        "search.html",
        text=text,
        canonical=q.text(),
        rows=[row(f) for f in page.rows],
        page=page,
        before=before,
        error="",
        **_status(ctx),
    )


def _status(ctx: ConsoleContext) -> dict[str, Any]:
    size = ctx.store.head().size
    return {"size": size, "covered": ctx.index.covered(), "index_error": ctx.index_error}


def int_param(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise InvalidRequestError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def pretty_json(data: bytes) -> Markup:
    """Indented JSON, escaped, with every redaction marker wrapped so the page can explain it."""
    if not data:
        return Markup("")
    try:
        text = json.dumps(json.loads(data), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        text = data.decode("utf-8", "replace")
    safe = str(escape(text))
    # Safe: the text is escaped first, and a marker is only [a-z0-9+:] (the pattern), wrapped in fixed markup.
    marked = _MARKER.sub(lambda m: f'<mark class="redacted" title="redacted: keyed digest">{m[0]}</mark>', safe)
    return Markup(marked)  # noqa: S704


async def entry_page(request: Request) -> Response:
    ctx = ctx_of(request)
    index = int(request.path_params["index"])
    data = ctx.entry_bytes(index)
    f = facts_of(index, data, ctx.index.user_headers)
    m = f.message
    prev, nxt = search.neighbours(ctx.index, f.principal, index)
    shapes = sorted({s or "" for s in re.findall(r"hmac-sha256(?:\+([a-z]+))?:", data.decode("utf-8", "replace"))})
    return render(
        request,
        "entry.html",
        index=index,
        f=f,
        m=m,
        row=row(f),
        input_json=pretty_json(m.input_json) if m is not None else "",
        result_json=pretty_json(m.result_json) if m is not None else "",
        shapes=shapes,
        prev=prev,
        next=nxt,
        size=len(data),
    )


async def stats_page(request: Request) -> Response:
    ctx = ctx_of(request, first_by_default=True)  # a fleet's first shard unless the selector names another
    name = request.query_params.get("range", "24h")
    if name not in RANGES:
        raise InvalidRequestError(f"range must be one of {', '.join(RANGES)}")
    until = time.time_ns()
    since = until - RANGES[name] * 1_000_000_000
    minutes = list(ctx.index.minute_stats(since, until))
    versions = ctx.index.version_changes(since, until)
    data = charts.buckets(minutes, since, until)
    totals = {k: sum(getattr(b, k) for b in data) for k in ("allow", "deny", "error")}
    return render(
        request,
        "stats.html",
        range=name,
        ranges=list(RANGES),
        chart=Markup(charts.rates_svg(data, versions)),  # noqa: S704 (charts.py escapes every text it draws)
        totals=totals,
        top_paths=ctx.index.top_denied("p", since, until),
        top_principals=ctx.index.top_denied("u", since, until),
        versions=[(s, iso_time(t), v) for s, t, v in versions],
        checkpoints=_checkpoints(ctx),
        all_versions=len(ctx.index.version_changes()),
        shard=_shown_shard(request),
    )


def _shown_shard(request: Request) -> str:
    """The shard a page defaulting to the first one shows (for the selector); "" on a one-ledger console."""
    fleet: Fleet | None = getattr(request.app.state, "fleet", None)
    return (request.query_params.get("shard") or fleet.origins[0]) if fleet else ""


def _checkpoints(ctx: ConsoleContext, n: int = 20) -> list[dict[str, Any]]:
    """The latest ``n`` checkpoints, newest first, with the witnesses that cosigned each (if any)."""
    out: list[dict[str, Any]] = []
    with ctx.store.read_txn() as txn:
        cur = txn.cursor(db=ctx.store.checkpoints)
        ok = cur.last()
        while ok and len(out) < n:
            size = int.from_bytes(bytes(cur.key()), "big")
            cosigned = txn.get(bytes(cur.key()), db=ctx.store.cosigned)
            lines = bytes(cosigned if cosigned is not None else cur.value()).decode("utf-8", "replace")
            signers = [line[2:].split(" ")[0] for line in lines.split("\n\n", 1)[-1].splitlines() if line]
            last = txn.get(u64(size - 1), db=ctx.store.entries) if size else None
            when = facts_of(size - 1, bytes(last)).time_ns if last is not None else 0
            out.append({"size": size, "time": iso_time(when) if when else "", "signers": signers})
            ok = cur.prev()
    return out


async def verify_page(request: Request) -> Response:
    return render(request, "verify.html")


async def login_route(request: Request) -> Response:
    return login_page(request)  # the guard answers /login itself; this route only exists for routing


def login_page(request: Request, status_code: int = 200, failed: bool = False) -> Response:
    return render(request, "login.html", status_code, failed=failed)


def error_page(request: Request, message: str, status_code: int) -> Response:
    return render(request, "error.html", status_code, message=message, status=status_code)
