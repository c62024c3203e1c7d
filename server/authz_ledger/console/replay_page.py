"""The replay page: what a candidate policy would change, the report ``authz-ledger replay`` prints, in the console.

``/replay?candidate=NAME&q=QUERY`` starts the replay (or joins the one going on, or shows a kept report) and
answers at once; while it runs the page shows its progress and reloads itself (a script polls the JSON endpoint;
without scripts a meta refresh does it), then shows the report. Its URL then carries ``size``, the ledger's size
when the run began, so the page, its paging and ``/api/replay.json`` show that report however the ledger grows.

``/api/replay.json`` with the same parameters answers exactly what ``authz-ledger replay --json`` prints for that
candidate and query (the same :meth:`Report.as_json`, byte for byte), or 202 with the progress while it runs.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from authz_ledger.console.context import ConsoleContext
from authz_ledger.console.pages import int_param, render
from authz_ledger.console.replay_runs import HOW_TO_CONFIGURE, Answer, Run
from authz_ledger.readside.values import iso_time

PAGE = 200
"""Changed decisions listed per page."""
TOP = 50
"""Rows of the by-path and by-principal tables (the JSON has them all)."""
BUSY_RETRY_SECONDS = 5


def _runs_request(request: Request) -> tuple[ConsoleContext, Answer | None]:
    """The console's replays (on a fleet: its first shard's ledger) and, when the URL names a candidate, the run
    it asks for."""
    ctx: ConsoleContext = request.app.state.ctx
    candidate = request.query_params.get("candidate", "")
    if not candidate:
        return ctx, None
    text = request.query_params.get("q", "").strip()
    return ctx, ctx.replays.request(candidate, text, int_param(request, "size"))


def run_url(run: Run, path: str = "/replay", **more: int) -> str:
    """The URL of ``run``'s report: with ``size`` it names that report, whatever the ledger holds now."""
    params = {"candidate": run.candidate, "q": run.query_text, "size": run.size, **more}
    return f"{path}?{urllib.parse.urlencode(params)}"


async def replay_page(request: Request) -> Response:
    ctx, answer = _runs_request(request)
    values: dict[str, Any] = {
        "candidates": ctx.replays.names,
        "how_to_configure": HOW_TO_CONFIGURE,
        "chosen": request.query_params.get("candidate", ""),
        "text": request.query_params.get("q", ""),
        "size_now": ctx.store.head().size,
        "run": None,
        "iso_time": iso_time,
    }
    if answer is None:
        return render(request, "replay.html", **values)
    run = answer.run
    values.update(run=run, busy=answer.busy, url=run_url(run), json_url=run_url(run, "/api/replay.json"))
    if answer.busy:
        response = render(request, "replay.html", 503, **values)
        response.headers["Retry-After"] = str(BUSY_RETRY_SECONDS)
        return response
    if run.report is not None:
        offset = int_param(request, "offset") or 0
        report = run.report
        values.update(
            report=report,
            changes=report.changes[offset : offset + PAGE],
            offset=offset,
            more_url=run_url(run, offset=offset + PAGE) if offset + PAGE < len(report.changes) else "",
            by_path=report.by_path.most_common(TOP),
            by_principal=report.by_principal.most_common(TOP),
        )
    return render(request, "replay.html", **values)


async def replay_json(request: Request) -> Response:
    """The report as ``replay --json`` prints it (200); 202 with the progress while it runs; 503 when another
    replay runs; the run's error (mapped by app.http_status) when it failed."""
    _, answer = _runs_request(request)
    if answer is None:
        return JSONResponse({"error": "name a candidate policy: /api/replay.json?candidate=NAME&q=QUERY"}, 400)
    run = answer.run
    if answer.busy:
        running = f"another replay is running: {run.candidate} over {run.query_text or 'every decision'!r}"
        body = {"error": running, "running": run.progress_json()}
        return JSONResponse(body, 503, headers={"Retry-After": str(BUSY_RETRY_SECONDS)})
    if run.error is not None:
        raise run.error
    if run.report is None:
        return JSONResponse(run.progress_json(), 202, headers={"Retry-After": "1", "Location": run_url(run)})
    # json.dumps with its defaults and a newline: the very bytes `authz-ledger replay --json` prints.
    return Response(json.dumps(run.report.as_json()) + "\n", media_type="application/json")
