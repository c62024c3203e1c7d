"""The search page of a console over several shards: one list, newest first, merged by time (fleet.py).

Same page, same query language, same URL as a one-ledger console (``/?q=...&before=...``); rows add the shard
they come from (``row-shard``) and link to ``/entry/N?shard=ORIGIN``. The live tail follows one ledger's
sequence, so it is offered on one-ledger consoles only.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from authz_ledger.console import query
from authz_ledger.console.fleet import Fleet
from authz_ledger.console.pages import query_text, render, row
from authz_ledger.errors import InvalidRequestError


async def search_page(request: Request) -> Response:
    fleet: Fleet = request.app.state.fleet
    text = query_text(request)
    try:
        q = query.parse(text)
    except InvalidRequestError as e:
        return render(request, "search.html", 400, text=text, error=str(e), rows=[], page=None, **_status(fleet))
    before = request.query_params.get("before")
    cursor = fleet.parse_cursor(before)
    page = await anyio.to_thread.run_sync(fleet.search, q, cursor)
    return render(
        request,
        "search.html",
        text=text,
        canonical=q.text(),
        rows=[{**row(f), "shard": origin} for origin, f in page.rows],
        page=page,
        before=before,
        error="",
        **_status(fleet),
    )


def _status(fleet: Fleet) -> dict[str, Any]:
    """The status line over every shard: decisions held, indexed, and any shard whose index stopped."""
    ctxs = [s.ctx for s in fleet.shards]
    errors = "; ".join(f"{s.origin}: {s.ctx.index_error}" for s in fleet.shards if s.ctx.index_error)
    return {
        "size": sum(c.store.head().size for c in ctxs),
        "covered": sum(c.index.covered() for c in ctxs),
        "index_error": errors,
    }
