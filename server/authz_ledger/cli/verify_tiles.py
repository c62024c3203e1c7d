"""``authz-ledger verify-tiles``: an auditor's check of a published tlog-tiles log (readside/verify_tiles.py).

It needs only what is published and the public keys: no data directory, no server of ours. Exit codes: 0 the log
verifies (and the state file, if given, now holds its checkpoint); 1 it does not (a bad signature, a missing
cosignature, a tampered tile or bundle, a rollback or a fork); 2 the command could not do its job (bad flags or
keys, a location or state file that cannot be read).

The ``--json`` object is a contract (field names never change meaning): on success ``ok`` (true), ``location``,
``origin``, ``tree_size``, ``root`` (base64), ``entries_checked``, ``tiles_checked`` (hash tiles),
``bundles_checked``, ``bytes_fetched``, ``witnesses`` (names whose cosignatures verified), ``state`` (``created``,
``advanced``, ``unchanged``, or null without ``--state``), ``trusted_size`` (the state's size before, or null),
``seconds``, ``error`` and ``code`` (null); on failure ``ok`` (false), ``location``, ``error`` (the message) and
``code``, the error class's stable code (errors.py): ``tiles_invalid``, ``tiles_rollback``, ``tiles_fork``,
``note`` (a signature or cosignature), ``tiles_unreadable``, ``config``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from authz_ledger.cli.common import b64, load_verifiers
from authz_ledger.errors import AuthzLedgerError, ConfigError, NoteError, TilesUnreadableError
from authz_ledger.readside.tiles_location import open_location, read_state, state_lock, write_state
from authz_ledger.readside.verify_tiles import TilesReport, verify_tiles
from authz_ledger.tlog import note
from authz_ledger.tlog.cosignature import CosignatureVerifier

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_HELP = "verify a published tlog-tiles log (directory or URL): signatures, cosignatures, every tile and entry"
_DESCRIPTION = """\
Verify a published C2SP tlog-tiles log, as an auditor who trusts only the keys: the checkpoint's signature by the
log (--vkey) and a cosignature by every --witness-vkey; every entry bundle against its leaf hashes, every hash tile
against the level below, and the root computed from them against the checkpoint (RFC 6962).

--state FILE keeps the checkpoint trusted after the last successful run. When it exists the new checkpoint must
extend it: a smaller tree (rollback) or another tree at its size (fork) fails. On success FILE is replaced
atomically with the new checkpoint (created if missing), so a cron job detects a log that rewrites its history.

Exit 0: verified. 1: does not verify. 2: bad flags or keys, location or state file unreadable.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``verify-tiles`` subcommand to ``authz-ledger``'s subparsers."""
    p = subparsers.add_parser(
        "verify-tiles", help=_HELP, description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("location", metavar="LOCATION", help="a tlog-tiles directory, or an http:// or https:// prefix")
    p.add_argument(
        "--vkey",
        required=True,
        action="append",
        metavar="VKEY",
        help="trusted log verifier key, or a file of them (repeatable, for rotated keys)",
    )
    p.add_argument(
        "--witness-vkey",
        action="append",
        default=[],
        metavar="VKEY",
        help="a witness's cosigner key (type 0x04), or a file of them; each one's cosignature is required (repeatable)",
    )
    p.add_argument("--state", metavar="FILE", help="the checkpoint trusted so far; checked against, then advanced")
    p.add_argument(
        "--timeout", type=float, default=30.0, metavar="SECONDS", help="HTTP connect and read timeout (default 30)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (see the module's contract)")
    p.set_defaults(func=cmd_verify_tiles)


def cmd_verify_tiles(args: argparse.Namespace, out: TextIO) -> int:
    started = time.perf_counter()
    state = Path(args.state) if args.state else None
    try:
        log_keys, witness_keys = _log_keys(args.vkey), _witness_keys(args.witness_vkey)
        with state_lock(state) if state else contextlib.nullcontext():
            trusted = read_state(state) if state else None
            location = open_location(args.location, timeout=args.timeout)
            try:
                report = verify_tiles(location.fetch, log_keys, witness_keys, trusted, workers=location.workers)
            finally:
                location.close()
            if state and report.signed != trusted:
                write_state(state, report.signed)
    except AuthzLedgerError as e:
        return _failed(args, out, e)
    _print_report(args, out, report, state, time.perf_counter() - started)
    return EXIT_OK


# --- Keys: the CLI's --vkey convention (a key, or a file of them, one per line) --------------------------------


def _log_keys(values: Sequence[str]) -> list[note.Verifier]:
    try:
        return load_verifiers(values)
    except (NoteError, OSError) as e:  # a key we cannot use is a usage error here, not a failed verification
        raise ConfigError(f"--vkey: {e}") from e


def _witness_keys(values: Sequence[str]) -> list[CosignatureVerifier]:
    """``--witness-vkey`` values read as ``load_verifiers`` reads ``--vkey``, as C2SP tlog-cosignature keys."""
    keys: list[CosignatureVerifier] = []
    for value in values:
        try:
            text = Path(value).read_text(encoding="utf-8") if os.path.isfile(value) else value
            keys += [CosignatureVerifier.from_vkey(line.strip()) for line in text.splitlines() if line.strip()]
        except (NoteError, OSError) as e:
            raise ConfigError(f"--witness-vkey {value}: {e}") from e
    return keys


# --- Output --------------------------------------------------------------------------------------------------


def _failed(args: argparse.Namespace, out: TextIO, e: AuthzLedgerError) -> int:
    """Exit 2 when the command could not do its job, 1 when the log does not verify."""
    code = EXIT_USAGE if isinstance(e, (ConfigError, TilesUnreadableError)) else EXIT_FAILED
    if args.json:
        doc = {"ok": False, "location": args.location, "error": str(e), "code": e.code}
        print(json.dumps(doc), file=out)
    elif code == EXIT_FAILED:
        print(f"FAIL: {args.location}: {e.diagnostics()}", file=out)
    else:
        print(f"authz-ledger verify-tiles: {e.diagnostics()}", file=sys.stderr)
    return code


def _print_report(args: argparse.Namespace, out: TextIO, r: TilesReport, state: Path | None, seconds: float) -> None:
    change = r.state_change if state else None
    if args.json:
        doc: dict[str, Any] = {
            "ok": True,
            "location": args.location,
            "origin": r.origin,
            "tree_size": r.size,
            "root": b64(r.root),
            "entries_checked": r.entries_checked,
            "tiles_checked": r.tiles_checked,
            "bundles_checked": r.bundles_checked,
            "bytes_fetched": r.bytes_fetched,
            "witnesses": list(r.witnesses),
            "state": change,
            "trusted_size": r.trusted_size,
            "seconds": round(seconds, 6),
            "error": None,
            "code": None,
        }
        print(json.dumps(doc), file=out)
        return
    print(
        f"OK: {args.location}: {r.origin} at tree size {r.size}, root {b64(r.root)}: {r.entries_checked} entries in "
        f"{r.bundles_checked} bundles and {r.tiles_checked} hash tiles verified in {seconds:.2f} s",
        file=out,
    )
    if r.witnesses:
        print(f"cosigned by {', '.join(r.witnesses)}", file=out)
    if state is not None:
        detail = {
            "created": f"state {state} created at tree size {r.size}",
            "advanced": f"state {state} advanced from tree size {r.trusted_size} to {r.size}",
            "unchanged": f"state {state} unchanged at tree size {r.size}",
        }
        print(detail[r.state_change], file=out)
