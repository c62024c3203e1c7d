"""``authz-ledger export``: a static C2SP tlog-tiles directory or JSON Lines, from a local data dir (see
readside/export_tiles.py and readside/export_jsonl.py).

Read-only on the ledger and safe while the server runs. Like cli.py, this module prints and lets the error tree
propagate to ``cli.main``, the one place that catches it. The ``--json`` summary is a contract: field names never
change meaning.
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from pathlib import Path
from typing import Any, TextIO

from authz_ledger.ledger.opening import LedgerPaths
from authz_ledger.ledger.store import Store
from authz_ledger.readside.export_jsonl import export_jsonl
from authz_ledger.readside.export_tiles import export_tiles

_HELP = "export to a static tlog-tiles directory (incremental) or to JSON Lines"
_DESCRIPTION = """\
Export the ledger for people and tools that trust nothing of ours.

--tiles DIR writes a C2SP tlog-tiles directory (checkpoint, tile/<L>/<N>, tile/entries/<N>) that any static web
server or object store can serve. Re-running it into the same DIR writes only new files and replaces
DIR/checkpoint last, so a cron job keeps a published copy current. --size N exports the tree of the checkpoint
published at size N instead of the latest one.

--jsonl FILE appends one JSON object per entry (as `authz-ledger log --json`), resuming after the last entry
already in FILE; --size N stops before entry N. FILE "-" writes to standard output.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``export`` subcommand to ``authz-ledger``'s subparsers."""
    p = subparsers.add_parser(
        "export", help=_HELP, description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data-dir", required=True, metavar="DIR")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--tiles", metavar="OUT_DIR", help="C2SP tlog-tiles directory to create or bring up to date")
    target.add_argument("--jsonl", metavar="FILE", help="JSON Lines file to create or append to ('-': stdout)")
    p.add_argument("--size", type=int, metavar="N", help="tiles: the checkpoint at tree size N; jsonl: entries < N")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    store = Store(LedgerPaths(Path(args.data_dir)).store, readonly=True)
    try:
        if args.tiles is not None:
            return _tiles(store, args, out)
        return _jsonl(store, args, out)
    finally:
        store.close()


def _tiles(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    r = export_tiles(store, args.tiles, checkpoint_size=args.size)
    if args.json:
        doc: dict[str, Any] = {
            "format": "tlog-tiles",
            "out": args.tiles,
            "size": r.size,
            "root": base64.b64encode(r.root).decode("ascii"),
            "cosigned": r.cosigned,
            "checkpoint_updated": r.checkpoint_updated,
            "hash_tiles_written": r.hash_tiles_written,
            "bundles_written": r.bundles_written,
            "files_existing": r.files_existing,
            "entries_written": r.entries_written,
            "bytes_written": r.bytes_written,
            "seconds": round(r.seconds, 6),
        }
        print(json.dumps(doc), file=out)
        return 0
    checkpoint = "updated" if r.checkpoint_updated else "unchanged"
    print(
        f"OK: {args.tiles}: tree size {r.size}, {r.files_written} new files ({r.hash_tiles_written} hash tiles, "
        f"{r.bundles_written} entry bundles holding {r.entries_written} entries), {r.files_existing} already "
        f"present; checkpoint {checkpoint}{' (cosigned)' if r.cosigned else ''}; "
        f"{r.bytes_written / 1e6:.1f} MB in {r.seconds:.2f} s",
        file=out,
    )
    return 0


def _jsonl(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    started = time.perf_counter()
    if args.jsonl == "-":
        export_jsonl(store, out, stop=args.size)
        return 0
    count = export_jsonl(store, args.jsonl, stop=args.size)
    seconds = time.perf_counter() - started
    if args.json:
        doc = {"format": "jsonl", "out": args.jsonl, "entries_written": count, "seconds": round(seconds, 6)}
        print(json.dumps(doc), file=out)
    else:
        print(f"OK: {args.jsonl}: {count} new entries in {seconds:.2f} s", file=out)
    return 0
