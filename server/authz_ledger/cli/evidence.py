"""``authz-ledger evidence`` and ``verify-evidence``: one archive an auditor keeps, checked with the key alone.

``evidence`` selects the decisions of a time window (and, optionally, a query in the console's language), and
writes them with their inclusion proofs against one signed checkpoint, the consistency proof to the latest, the
witnesses' cosignatures, the keys, and an HTML report (evidence/pack.py lists the members). The pack is checked
before it is written. ``verify-evidence`` checks a pack offline with the log's verifier key and names every
member, line or byte that does not hold.

Contracts (``--json``; field names and meanings never change):

* ``evidence`` -> ``{"out", "bytes", "sha256", "origin", "entries", "complete", "first_index", "end_index",
  "checkpoint_size", "latest_size"}``
* ``verify-evidence`` -> ``{"ok", "origin", "entries", "complete", "first_index", "end_index",
  "checkpoint_size", "latest_size", "cosigned_by": [{"witness", "timestamp", "pinned"}],
  "findings": [{"member", "where", "message"}]}``; exit 0 when verified, 1 when not.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, TextIO

from authz_ledger import keys
from authz_ledger.cli.common import load_verifiers
from authz_ledger.config import DEFAULT_USER_HEADERS
from authz_ledger.console import query
from authz_ledger.errors import AuthzLedgerError, ConfigError, SigningKeyError
from authz_ledger.evidence import pack
from authz_ledger.evidence.build import build_pack
from authz_ledger.evidence.check import Verdict, check_pack, witness_verifier
from authz_ledger.ledger.opening import LedgerPaths
from authz_ledger.ledger.store import Store
from authz_ledger.readside.values import iso_time


def register(sub: Any) -> None:
    e = sub.add_parser(
        "evidence",
        help="write an evidence pack: decisions of a time window with the proofs an auditor checks offline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("--data-dir", required=True, type=Path)
    e.add_argument("--since", required=True, metavar="TIME", help="15m, 1h, 7d or ISO 8601 (inclusive)")
    e.add_argument("--until", default="", metavar="TIME", help="same forms, exclusive (default: now)")
    e.add_argument("--filter", default="", metavar="QUERY", help="the console's query language, e.g. 'user:alice'")
    e.add_argument("--out", required=True, metavar="PACK", help=f"the archive to write (e.g. x{pack.FILE_EXTENSION})")
    e.add_argument(
        "--vkey", action="append", default=[], metavar="VKEY",
        help="the log's verifier key (or a file of them) the pack is checked with (default: the data dir's key)",
    )  # fmt: skip
    e.add_argument("--witness-vkey", action="append", default=[], metavar="VKEY", help="a witness's key (repeatable)")
    e.add_argument("--user-header", action="append", default=None, metavar="NAME", help="as console --user-header")
    e.add_argument("--json", action="store_true", help="one JSON object")
    e.set_defaults(func=cmd_evidence)

    v = sub.add_parser(
        "verify-evidence",
        help="check an evidence pack offline with the log's verifier key; every changed byte is named",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    v.add_argument("pack", metavar="PACK")
    v.add_argument("--vkey", required=True, action="append", metavar="VKEY", help="the log's verifier key (or a file)")
    v.add_argument(
        "--witness-vkey", action="append", default=[], metavar="VKEY",
        help="a witness key you trust (or a file of them): its cosignature is reported as pinned (repeatable)",
    )  # fmt: skip
    v.add_argument("--json", action="store_true", help="one JSON object: ok, counts, cosigned_by, findings")
    v.set_defaults(func=cmd_verify_evidence)


def _log_keys(args: argparse.Namespace) -> list[Any]:
    if args.vkey:
        return load_verifiers(args.vkey)
    try:
        return [keys.load_signing_key(LedgerPaths(args.data_dir).signing_key).verifier()]
    except (SigningKeyError, OSError) as e:
        raise ConfigError(f"give the log's verifier key with --vkey (the data dir's key is not readable: {e})") from e


def cmd_evidence(args: argparse.Namespace, out: TextIO) -> int:
    until = query.parse_time(args.until) if args.until else time.time_ns()
    selection = pack.Selection(query.parse_time(args.since), until, args.filter)
    if selection.since_ns >= selection.until_ns:
        raise ConfigError("--since must be before --until")
    parsed = query.parse(args.filter)
    if parsed.since_ns or parsed.until_ns:
        # A pack is kept for years: its window is the absolute --since / --until, never a relative time.
        raise ConfigError("--filter must not hold since: or until: (give the window with --since and --until)")
    verifiers = _log_keys(args)
    store = Store(LedgerPaths(args.data_dir).store, readonly=True)
    try:
        built = build_pack(
            store,
            verifiers,
            selection,
            witness_vkeys=args.witness_vkey,
            user_headers=args.user_header or DEFAULT_USER_HEADERS,
        )
    finally:
        store.close()
    target = Path(args.out)
    tmp = target.with_name(target.name + ".partial")
    tmp.write_bytes(built.archive)
    os.replace(tmp, target)
    m, cp, latest = built.manifest, built.checkpoint.checkpoint, built.latest.checkpoint
    doc = {
        "out": str(target),
        "bytes": len(built.archive),
        "sha256": pack.sha256_hex(built.archive),
        "origin": m.origin,
        "entries": m.entries,
        "complete": m.complete,
        "first_index": m.first_index,
        "end_index": m.end_index,
        "checkpoint_size": cp.size,
        "latest_size": latest.size,
    }
    if args.json:
        print(json.dumps(doc), file=out)
        return 0
    print(
        f"wrote {target}: {m.entries} decisions of {m.origin} from {iso_time(selection.since_ns)} to "
        f"{iso_time(selection.until_ns)}"
        + (f" matching {m.selection.filter!r}" if m.selection.filter else "")
        + f" (indexes {m.first_index}..{m.end_index - 1}), proved against checkpoint {cp.size}"
        f", consistent with {latest.size}; proofs checked; {len(built.archive)} bytes, sha256 {doc['sha256']}",
        file=out,
    )
    return 0


def _describe(path: str, v: Verdict) -> str:
    m, cp, latest = v.manifest, v.checkpoint, v.latest
    if m is None or cp is None or latest is None:  # a verified pack has all three
        raise AssertionError("verified pack without manifest or checkpoints")
    kind = "every entry of indexes" if m.complete else f"the entries matching {m.selection.filter!r} among"
    cosigned = "; ".join(
        f"cosigned by {name} at {iso_time(ts * 1_000_000_000, digits=0)}"
        + ("" if pinned else " (key from the pack, not pinned: pass --witness-vkey)")
        for name, ts, pinned in v.cosigned_by
    )
    return (
        f"OK: {path}: {v.entries} decisions of {m.origin}, {kind} {m.first_index}..{m.end_index - 1}, "
        f"in the signed tree of size {cp.checkpoint.size}, which the latest checkpoint ({latest.checkpoint.size}) "
        f"extends" + (f"; {cosigned}" if cosigned else "; no witness cosignature")
    )


def _key_texts(values: list[str]) -> list[str]:
    """``--witness-vkey`` values, each a key or a file of them (one per line), as ``--vkey`` takes them."""
    out = []
    for v in values:
        text = Path(v).read_text(encoding="utf-8") if os.path.isfile(v) else v
        out += [line.strip() for line in text.splitlines() if line.strip()]
    return out


def cmd_verify_evidence(args: argparse.Namespace, out: TextIO) -> int:
    # A key that does not parse is the caller's mistake (exit 2), never a pack that does not verify (exit 1).
    try:
        log_keys = load_verifiers(args.vkey)
        witnesses = _key_texts(args.witness_vkey)
        for w in witnesses:
            witness_verifier(w)
    except AuthzLedgerError as e:
        raise ConfigError(f"not a verifier key: {e}") from e
    verdict = check_pack(Path(args.pack).read_bytes(), log_keys, witnesses=witnesses)
    if args.json:
        print(json.dumps(verdict.as_json()), file=out)
    elif verdict.ok:
        print(_describe(args.pack, verdict), file=out)
    else:
        more = " (and more)" if verdict.truncated else ""
        print(f"FAIL: {args.pack}: {len(verdict.findings)} problem(s){more}", file=out)
        for f in verdict.findings:
            print(f"  {f}", file=out)
    return 0 if verdict.ok else 1
