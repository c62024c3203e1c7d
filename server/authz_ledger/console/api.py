"""The console's JSON and byte endpoints: what the pages' scripts fetch, and what scripts of auditors can use.

``/api/entry/N`` and ``/api/proof/N`` serve the stored bytes and the inclusion proof *as stored*, without
checking them here: the browser checks them against a signed checkpoint with the auditor's key (verify.js), and a
damaged entry must reach it as it is, to be shown FAILED, not be hidden behind a server error.
"""

from __future__ import annotations

import asyncio
import base64
import functools
from collections.abc import AsyncIterator

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from authz_ledger.console import query, search
from authz_ledger.console.context import ConsoleContext
from authz_ledger.console.pages import ctx_of, int_param, query_text, row
from authz_ledger.errors import NotFoundError, OutOfRangeError
from authz_ledger.readside.values import SignedCheckpoint
from authz_ledger.tlog import proof, tree
from authz_ledger.tlog.receipt import FILE_EXTENSION

TAIL_POLL_SECONDS = 0.5
TAIL_PING_SECONDS = 15.0


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


async def search_json(request: Request) -> Response:
    """``{"rows": [...], "next_before": N | null, "partial": bool, "query": canonical text}``."""
    ctx = ctx_of(request)
    q = query.parse(query_text(request))
    page = await anyio.to_thread.run_sync(functools.partial(search.search, ctx.index, q, int_param(request, "before")))
    return JSONResponse(
        {
            "rows": [row(f) for f in page.rows],
            "next_before": page.next_before,
            "partial": page.partial,
            "query": q.text(),
        }
    )


async def entry(request: Request) -> Response:
    """``{"index", "entry_b64"}``: the stored bytes, exactly as hashed (RFC 9162 §2.1.1 leaf input)."""
    index = int(request.path_params["index"])
    return JSONResponse({"index": index, "entry_b64": _b64(ctx_of(request).entry_bytes(index))})


async def entry_raw(request: Request) -> Response:
    index = int(request.path_params["index"])
    return Response(
        ctx_of(request).entry_bytes(index),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="entry-{index}.bin"'},
    )


def _latest_checkpoint(ctx: ConsoleContext) -> SignedCheckpoint:
    """The latest signed checkpoint, in its cosigned form when witnesses cosigned that very tree size.

    None yet is "not yet" (409: the page checks again), not "no such thing"."""
    try:
        latest = ctx.reader.checkpoint()
    except NotFoundError as e:
        raise OutOfRangeError(str(e)) from e
    return ctx.reader.checkpoint(latest.size, cosigned=True)


async def inclusion(request: Request) -> Response:
    """``{"index", "tree_size", "leaf_hash", "proof": [b64], "checkpoint": note}``: PATH(index, D[tree_size])
    (RFC 9162 §2.1.3.1) from the stored tree hashes, against the latest signed checkpoint (with its cosignatures).
    ``leaf_hash`` is the stored leaf hash: trusted for nothing, it lets the page tell a changed entry (its bytes
    no longer hash to it) from a proof that is not the log's."""
    ctx = ctx_of(request)
    index = int(request.path_params["index"])
    signed = _latest_checkpoint(ctx)
    size = signed.size
    if index >= size:
        raise OutOfRangeError(
            f"entry {index} is not covered by the latest signed checkpoint (tree size {size}) yet: "
            "the next checkpoint will cover it"
        )
    with ctx.store.read_txn() as txn:
        read = functools.partial(ctx.store.read_hashes, txn=txn)
        hashes = proof.inclusion_proof(index, size, read)
        leaf = read([tree.stored_hash_index(0, index)])[0]
    return JSONResponse(
        {
            "index": index,
            "tree_size": size,
            "leaf_hash": _b64(leaf),
            "proof": [_b64(h) for h in hashes],
            "checkpoint": signed.note.decode("utf-8"),
        }
    )


async def receipt(request: Request) -> Response:
    """A C2SP tlog-proof receipt for the entry, to keep and check offline (``verify-receipt`` or /verify)."""
    ctx = ctx_of(request)
    index = int(request.path_params["index"])
    issued = await anyio.to_thread.run_sync(functools.partial(ctx.reader.receipt, index=index))
    return Response(
        issued.proof,
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="entry-{index}{FILE_EXTENSION}"'},
    )


async def checkpoint(request: Request) -> Response:
    """The latest signed checkpoint note, with witness cosignatures when they are stored."""
    ctx = ctx_of(request)
    return Response(_latest_checkpoint(ctx).note, media_type="text/plain; charset=utf-8")


async def tail(request: Request) -> Response:
    """Server-sent events: one ``row`` event (the row's HTML) per new decision matching the query."""
    ctx = ctx_of(request)
    q = query.parse(query_text(request))
    after = int_param(request, "after")
    start = ctx.store.head().size - 1 if after is None else after
    env = request.app.state.templates
    template = env.get_template("_row.html")

    async def events() -> AsyncIterator[str]:
        position = start
        idle = 0.0
        yield f"event: position\ndata: {position}\n\n"
        while not ctx.stopping:  # StreamingResponse ends this generator when the client goes away
            rows, position = await anyio.to_thread.run_sync(search.newer, ctx.index, q, position)
            for f in rows:
                html = template.render(r=row(f)).replace("\n", " ")
                yield f"event: row\nid: {f.seq}\ndata: {html}\n\n"
            if rows:
                idle = 0.0
            else:
                idle += TAIL_POLL_SECONDS
                if idle >= TAIL_PING_SECONDS:
                    idle = 0.0
                    yield ": ping\n\n"
                await asyncio.sleep(TAIL_POLL_SECONDS)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})


async def healthz(request: Request) -> Response:
    ctx = ctx_of(request)
    return JSONResponse({"size": ctx.store.head().size, "indexed": ctx.index.covered(), "error": ctx.index_error})
