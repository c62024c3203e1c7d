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

from authz_ledger import keys
from authz_ledger.cli.common import non_negative
from authz_ledger.errors import ConfigError
from authz_ledger.ledger.opening import LedgerPaths
from authz_ledger.ledger.store import Store
from authz_ledger.ledger.trust import Trust, verify_ledger
from authz_ledger.readside.export_jsonl import export_jsonl
from authz_ledger.readside.export_tiles import export_tiles
from authz_ledger.tlog import note

_HELP = "export to a static tlog-tiles directory (incremental) or to JSON Lines"
_DESCRIPTION = """\
Export the ledger for people and tools that trust nothing of ours.

--tiles DIR writes a C2SP tlog-tiles directory (checkpoint, tile/<L>/<N>, tile/entries/<N>) that any static web
server or object store can serve. Re-running it into the same DIR writes only new files and replaces
DIR/checkpoint last, so a cron job keeps a published copy current. --size N exports the tree of the checkpoint
published at size N instead of the latest one.

--jsonl FILE appends one JSON object per entry (as `authz-ledger log --json`), resuming after the last entry
already in FILE, up to the latest signed checkpoint; --size N stops before entry N. FILE "-" writes to standard
output.

Nothing is published that does not verify: before writing anything, export runs the same verification as
`authz-ledger verify` (every entry against its leaf hash, the tree, the chain, the decision-id index, every
checkpoint signed by a --vkey key -- by default the data directory's own signing key). On a bad ledger it writes
nothing and exits 1 (3 for a damaged file), naming the first bad sequence number.
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
    p.add_argument("--size", type=non_negative, metavar="N", help="tiles: the checkpoint at size N; jsonl: entries < N")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument(
        "--vkey",
        action="append",
        default=[],
        metavar="VKEY",
        help="verifier key (or a file of them) the checkpoints must be signed by; repeatable; default: the data "
        "directory's own signing key",
    )
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    paths = LedgerPaths(Path(args.data_dir))
    verifiers = _verifiers(args.vkey, paths)
    store = Store(paths.store, readonly=True)
    try:
        # The one verification core (ledger.trust): a tampered ledger is refused before a file is written.
        report = verify_ledger(store, Trust(verifiers, checkpoint_file=paths.checkpoint))
        if args.tiles is not None:
            return _tiles(store, args, out, report.size, verifiers)
        # JSON Lines stop where signatures stop: entries after the latest checkpoint wait for the next one.
        return _jsonl(store, args, out, report.latest_checkpoint or 0)
    finally:
        store.close()


def _verifiers(vkeys: list[str], paths: LedgerPaths) -> list[note.Verifier]:
    if vkeys:
        return keys.load_verifiers(vkeys)
    if not paths.signing_key.exists():
        raise ConfigError(f"no --vkey given and no signing key at {paths.signing_key} to verify the ledger with")
    return [keys.load_signing_key(paths.signing_key).verifier()]


def _tiles(store: Store, args: argparse.Namespace, out: TextIO, verified: int, verifiers: list[note.Verifier]) -> int:
    r = export_tiles(store, args.tiles, checkpoint_size=args.size, verified_size=verified, verifiers=verifiers)
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


def _jsonl(store: Store, args: argparse.Namespace, out: TextIO, verified: int) -> int:
    started = time.perf_counter()
    # Entries appended after the verified snapshot wait for the next export.
    args.size = verified if args.size is None else min(args.size, verified)
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
