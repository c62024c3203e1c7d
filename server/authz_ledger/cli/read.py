"""Read-side commands of the ``authz-ledger`` CLI: show, list, tail, receipt, verify-receipt, proof.

Every command but ``verify-receipt`` (which is offline) reads either a local data directory (``--data-dir``:
read-only LMDB transactions, safe while the server runs) or a running server's audit API (``--server ADDR``,
with ``--ca``/``--cert``/``--key`` for TLS and mutual TLS), through the sources of readside/client.py. Both
return the same values, so the output is the same whichever is used.

Contracts (``--json``; field names and meanings never change):

* ``proof inclusion`` -> ``{"index", "tree_size", "leaf_b64", "root", "proof"}``
* ``proof consistency`` -> ``{"size1", "root1", "size2", "root2", "proof"}``
* ``show``/``list``/``tail`` -> one object per entry, as ``log --json``: ``index``, ``decision_id``,
  ``entry_b64`` (the stored bytes) and the decoded fields.
* ``list`` over several sources (a fleet, one shard each), or with ``--vkey``: the same object, then ``shard``
  (the origin of the ledger it is in) and ``verified`` (true: it leads to its shard's latest signed checkpoint;
  false: no checkpoint covers it yet). Rows are merged by decision time (readside/fleet.py).

A tree size left out means the latest signed checkpoint's size. Proofs fetched from a server are verified
against the roots it sent before they are printed (fail closed). Commands take ``(args, out)`` and raise the
error tree; ``cli.main`` is the one place that catches it.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from authz_ledger.cli import render
from authz_ledger.cli.common import b64, load_verifiers, non_negative
from authz_ledger.cli.filters import entry_filter, filter_flags, header_pairs, with_headers
from authz_ledger.errors import ConfigError, InvalidRequestError, ProofError
from authz_ledger.readside.client import LocalSource, RemoteSource, Source, read_flag_file
from authz_ledger.readside.fleet import VerifiedShard, check_distinct, merge_by_time, open_sources
from authz_ledger.readside.values import EntryFilter, StoredEntry
from authz_ledger.record import entry
from authz_ledger.tlog import receipt

# --- Where the ledger is read from ----------------------------------------------------------------------


def open_source(args: argparse.Namespace) -> Source:
    if bool(args.data_dir) == bool(args.server):
        raise ConfigError("give exactly one of --data-dir DIR (local, read-only) or --server ADDR (audit API)")
    if args.data_dir:
        if args.ca or args.cert or args.key:
            raise ConfigError("--ca, --cert and --key are for --server")
        return LocalSource(args.data_dir)
    return RemoteSource(args.server, args.ca, args.cert, args.key)


# --- Output ----------------------------------------------------------------------------------------------


def entry_doc(e: StoredEntry) -> dict[str, Any]:
    """The ``log --json`` object for one entry: index, decision id, the stored bytes, the decoded fields."""
    doc: dict[str, Any] = {"index": e.index, "decision_id": e.message.decision_id, "entry_b64": b64(e.raw)}
    doc.update(entry.to_json_fields(e.message))
    return doc


def _print_entry(
    e: StoredEntry, as_json: bool, out: TextIO, *, flush: bool = False, header: list[bool] | None = None
) -> None:
    """``--json``: the ``log --json`` object; else a table row (``header``: a one-item flag, printed once)."""
    if as_json:
        print(json.dumps(entry_doc(e), ensure_ascii=False), file=out, flush=flush)
        return
    if header is not None and not header[0]:
        print(render.table_header(), file=out)
        header[0] = True
    print(render.table_row(e), file=out, flush=flush)


# --- Commands --------------------------------------------------------------------------------------------


def cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    if (args.index is None) == (args.decision_id is None):
        raise ConfigError("give exactly one of --index N or --decision-id ID")
    src = open_source(args)
    try:
        found = src.entry(args.index, args.decision_id)
    finally:
        src.close()
    if args.json:
        print(json.dumps(entry_doc(found), ensure_ascii=False), file=out)
    else:
        print(render.entry_text(found), file=out)
    return 0


def cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    """One source as it always was; with several (a fleet) or ``--vkey``, every row checked (_list_verified)."""
    flt = entry_filter(args)
    pairs = header_pairs(args)
    sources = open_sources(args.data_dir or [], args.server or [], args.ca, args.cert, args.key)
    try:
        if len(sources) > 1 or args.vkey:
            _list_verified(args, out, sources, flt, pairs)
            return 0
        header = [False]
        found = sources[0][1].entries(args.from_, args.to, None if pairs else args.limit, flt)
        for shown, e in enumerate(with_headers(found, pairs)):
            if pairs and args.limit is not None and shown >= args.limit:
                break
            _print_entry(e, args.json, out, header=header)
    finally:
        for _, src in sources:
            src.close()
    return 0


def _list_verified(
    args: argparse.Namespace,
    out: TextIO,
    sources: list[tuple[str, Source]],
    flt: EntryFilter,
    pairs: list[tuple[str, str]],
) -> None:
    """Rows of every shard, each verified against its own shard's signed checkpoint (readside/fleet.py): one
    source in index order, several merged by decision time. JSON adds ``shard`` (the origin) and ``verified``."""
    several = len(sources) > 1
    if several and (args.from_ or args.to is not None):
        raise ConfigError(
            "--from and --to are indexes within one ledger: with several sources, select by time (--since, --until)"
        )
    if not args.vkey:
        raise ConfigError("several sources need --vkey: each row is verified with the key named like its shard")
    verifiers = load_verifiers(args.vkey)
    shards = [VerifiedShard(src, where, verifiers) for where, src in sources]
    check_distinct(shards)
    limit = None if pairs else args.limit
    start, end = (0, None) if several else (args.from_, args.to)
    streams = [(s, with_headers(s.entries(s.source.entries(start, end, limit, flt)), pairs)) for s in shards]
    rows: Iterable[tuple[VerifiedShard, StoredEntry]]
    if several:
        rows = merge_by_time(streams, args.limit)
    else:
        rows = itertools.islice(((streams[0][0], e) for e in streams[0][1]), args.limit)
    width = max(len("SHARD"), *(len(s.origin) for s in shards))
    header = False
    for shard, e in rows:
        verified = shard.verify(e)
        if args.json:
            doc = {**entry_doc(e), "shard": shard.origin, "verified": verified}
            print(json.dumps(doc, ensure_ascii=False), file=out)
            continue
        if not header:
            print(render.shard_table_header(width), file=out)
            header = True
        print(render.shard_table_row(width, shard.origin, verified, e), file=out)


def cmd_tail(args: argparse.Namespace, out: TextIO, stop: threading.Event | None = None) -> int:
    """The last ``-n`` entries (those matching the filters), then with ``-f`` every new matching one."""
    if args.lines < 0:
        raise InvalidRequestError(f"-n must be non-negative, got {args.lines}")
    flt = entry_filter(args)
    pairs = header_pairs(args)
    src = open_source(args)
    try:
        # -n counts matching entries: with a header filter (applied here, not by the source) look further back.
        start = 0 if pairs else src.tail_start(args.lines)
        last: collections.deque[StoredEntry] = collections.deque(maxlen=args.lines)
        if args.lines:
            last.extend(with_headers(src.entries(start, None, None, flt), pairs))
        header = [False]
        for e in last:
            _print_entry(e, args.json, out, flush=True, header=header)
        if args.follow:
            follow_from = last[-1].index + 1 if last else start
            for e in with_headers(src.follow(follow_from, flt, stop or threading.Event()), pairs):
                _print_entry(e, args.json, out, flush=True, header=header)
    except KeyboardInterrupt:
        return 0  # the way to end tail -f
    finally:
        src.close()
    return 0


def cmd_receipt(args: argparse.Namespace, out: TextIO) -> int:
    if (args.index is None) == (args.decision_id is None):
        raise ConfigError("give exactly one of --decision-id ID or --index N")
    src = open_source(args)
    try:
        issued = src.receipt(args.index, args.decision_id)
    finally:
        src.close()
    if args.entry_out:
        Path(args.entry_out).write_bytes(issued.entry.raw)
    if args.out:
        Path(args.out).write_bytes(issued.proof)
        print(
            f"receipt for entry {issued.entry.index} (decision {issued.entry.message.decision_id}) written to "
            f"{args.out}" + (f", entry bytes to {args.entry_out}" if args.entry_out else ""),
            file=out,
        )
    else:
        out.write(issued.proof.decode("utf-8"))
    return 0


def cmd_verify_receipt(args: argparse.Namespace, out: TextIO) -> int:
    proof = read_flag_file(args.receipt, "--receipt")
    data = read_flag_file(args.entry, "--entry")
    cp = receipt.verify_receipt(proof, data, load_verifiers(args.vkey), args.origin)
    index = receipt.parse_receipt(proof).index
    # The receipt proves these bytes are entry `index`; which decision they record is read from them, and must be
    # the one the user asked about (a receipt for another decision proves nothing about this one).
    recorded = entry.decode(data, index).decision_id
    if args.decision_id is not None and recorded != _canonical_uuid(args.decision_id):
        raise ProofError(f"the receipt's entry {index} records decision {recorded or '(none)'}, not {args.decision_id}")
    if args.json:
        doc = {
            "ok": True,
            "index": index,
            "origin": cp.origin,
            "tree_size": cp.size,
            "root": b64(cp.root),
            "decision_id": recorded,
        }
        print(json.dumps(doc), file=out)
    else:
        print(
            f"OK: {args.receipt}: entry {index} (decision {recorded}) is in {cp.origin} at tree size {cp.size} "
            f"(root {b64(cp.root)})",
            file=out,
        )
    return 0


def _canonical_uuid(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise ConfigError(f"--decision-id {text!r} is not a UUID") from None


def cmd_proof_inclusion(args: argparse.Namespace, out: TextIO) -> int:
    src = open_source(args)
    try:
        p = src.inclusion(args.index, args.tree_size)
    finally:
        src.close()
    if args.json:
        doc = {
            "index": p.index,
            "tree_size": p.tree_size,
            "leaf_b64": b64(p.entry),
            "root": b64(p.root),
            "proof": [b64(h) for h in p.hashes],
        }
        print(json.dumps(doc), file=out)
    else:
        print(f"entry {p.index} in the tree of size {p.tree_size}, root {b64(p.root)}", file=out)
        print(f"leaf hash {b64(p.leaf_hash)}", file=out)
        for h in p.hashes:
            print(b64(h), file=out)
    return 0


def cmd_proof_consistency(args: argparse.Namespace, out: TextIO) -> int:
    src = open_source(args)
    try:
        p = src.consistency(args.from_, args.to)
    finally:
        src.close()
    if args.json:
        doc = {
            "size1": p.size1,
            "root1": b64(p.root1),
            "size2": p.size2,
            "root2": b64(p.root2),
            "proof": [b64(h) for h in p.hashes],
        }
        print(json.dumps(doc), file=out)
    else:
        print(f"tree {p.size1} (root {b64(p.root1)}) -> tree {p.size2} (root {b64(p.root2)})", file=out)
        for h in p.hashes:
            print(b64(h), file=out)
    return 0


# --- Parser ----------------------------------------------------------------------------------------------


def _source_flags(p: argparse.ArgumentParser, *, several: bool = False) -> None:
    """``--data-dir`` / ``--server``: exactly one, or with ``several`` any number of either (shards of a fleet)."""
    g = p.add_argument_group("where to read (one or more: each a shard)" if several else "where to read (exactly one)")
    more = {"action": "append", "default": []} if several else {}
    again = "; repeatable" if several else ""
    dd = "a local ledger directory (read-only; safe while serving)" + again
    g.add_argument("--data-dir", metavar="DIR", help=dd, **more)  # type: ignore[arg-type]
    sv = "a running server's audit API, e.g. 127.0.0.1:9192" + again
    g.add_argument("--server", metavar="ADDR", help=sv, **more)  # type: ignore[arg-type]
    t = p.add_argument_group("TLS for --server")
    t.add_argument("--ca", metavar="PEM", help="CA certificate(s) the server's certificate must chain to")
    t.add_argument("--cert", metavar="PEM", help="client certificate, for servers requiring mutual TLS")
    t.add_argument("--key", metavar="PEM", help="the client certificate's private key")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the read-side subcommands to the ``authz-ledger`` parser."""
    s = sub.add_parser("show", help="print one entry (by index or decision id) with its stored bytes")
    _source_flags(s)
    s.add_argument("--index", type=non_negative, metavar="N")
    s.add_argument("--decision-id", metavar="ID")
    s.add_argument(
        "--json", action="store_true", help="one JSON object, as log --json (default: aligned key: value lines)"
    )
    s.set_defaults(func=cmd_show)

    ls = sub.add_parser(
        "list", help="print entries in sequence order, filtered; several sources: one view merged by time, verified"
    )
    _source_flags(ls, several=True)
    filter_flags(ls)
    ls.add_argument("--from", dest="from_", type=non_negative, default=0, metavar="N", help="first index (default 0)")
    ls.add_argument("--to", type=non_negative, metavar="M", help="stop before index M (default: the current size)")
    ls.add_argument("--limit", type=non_negative, metavar="K", help="at most K entries")
    ls.add_argument(
        "--json", action="store_true", help="one JSON object per line, as log --json (with --vkey: + shard, verified)"
    )
    ls.add_argument(
        "--vkey",
        action="append",
        metavar="VKEY",
        help="verify each row against its shard's latest signed checkpoint with the key named like the shard's "
        "origin (a key or a file of them); repeatable; required with several sources",
    )
    ls.set_defaults(func=cmd_list)

    t = sub.add_parser("tail", help="print the last entries; with -f, keep printing new ones")
    _source_flags(t)
    filter_flags(t)
    t.add_argument("-n", "--lines", type=non_negative, default=10, metavar="N", help="the last N entries (default 10)")
    t.add_argument("-f", "--follow", action="store_true", help="keep following new entries until interrupted")
    t.add_argument("--json", action="store_true", help="one JSON object per line, as log --json")
    t.set_defaults(func=cmd_tail)

    r = sub.add_parser("receipt", help="a C2SP tlog-proof receipt for one decision (verifiable offline)")
    _source_flags(r)
    r.add_argument("--decision-id", metavar="ID")
    r.add_argument("--index", type=non_negative, metavar="N")
    r.add_argument("--out", metavar="FILE", help=f"write the receipt here (e.g. d{receipt.FILE_EXTENSION})")
    r.add_argument("--entry-out", metavar="FILE", help="write the entry's stored bytes here (for verify-receipt)")
    r.set_defaults(func=cmd_receipt)

    v = sub.add_parser("verify-receipt", help="offline: check a receipt against the entry bytes and a vkey")
    v.add_argument("--receipt", required=True, metavar="FILE")
    v.add_argument("--entry", required=True, metavar="FILE", help="the entry's stored bytes")
    v.add_argument("--vkey", required=True, action="append", metavar="VKEY", help="trusted log key, or a file of them")
    v.add_argument("--origin", help="require the checkpoint to be for this log origin")
    v.add_argument("--decision-id", metavar="ID", help="require the entry to record this decision")
    v.add_argument(
        "--json", action="store_true", help="one JSON object: ok, index, origin, tree_size, root, decision_id"
    )
    v.set_defaults(func=cmd_verify_receipt)

    pr = sub.add_parser("proof", help="RFC 9162 inclusion and consistency proofs")
    kinds = pr.add_subparsers(dest="proof", required=True, metavar="KIND")
    pi = kinds.add_parser("inclusion", help="inclusion proof of one entry")
    _source_flags(pi)
    pi.add_argument("--index", type=non_negative, required=True, metavar="N")
    pi.add_argument("--tree-size", type=non_negative, metavar="M", help="default: the latest checkpoint's size")
    pi.add_argument("--json", action="store_true", help='{"index", "tree_size", "leaf_b64", "root", "proof"}')
    pi.set_defaults(func=cmd_proof_inclusion)
    pc = kinds.add_parser("consistency", help="consistency proof between two tree sizes")
    _source_flags(pc)
    pc.add_argument("--from", dest="from_", type=non_negative, required=True, metavar="M", help="the older tree size")
    pc.add_argument("--to", type=non_negative, metavar="N", help="the newer tree size (default: the latest)")
    pc.add_argument("--json", action="store_true", help='{"size1", "root1", "size2", "root2", "proof"}')
    pc.set_defaults(func=cmd_proof_consistency)
