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

A tree size left out means the latest signed checkpoint's size. Proofs fetched from a server are verified
against the roots it sent before they are printed (fail closed). Commands take ``(args, out)`` and raise the
error tree; ``cli.main`` is the one place that catches it.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import orjson

from authz_ledger.cli import render
from authz_ledger.cli.common import b64, load_verifiers, non_negative
from authz_ledger.errors import ConfigError, InvalidRequestError, ProofError
from authz_ledger.readside.client import LocalSource, RemoteSource, Source, read_flag_file
from authz_ledger.readside.values import EntryFilter, StoredEntry
from authz_ledger.record import entry
from authz_ledger.record.redact import document_headers
from authz_ledger.tlog import receipt

_OUTCOMES = {name: value for value, name in entry.OUTCOME_NAMES.items()}


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


_AGO = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _parse_time(text: str | None, flag: str, *, now_ns: int | None = None) -> int:
    """Unix nanoseconds, an ISO 8601 time (UTC when it names no zone), or a duration before now (``90s``,
    ``30m``, ``1h``, ``2d``, ``1w``, or several: ``1h30m``)."""
    if not text:
        return 0
    if text.isdigit():
        return int(text)
    parts = _AGO.findall(text)
    if parts and "".join(n + u for n, u in parts) == text:
        ago = sum(float(n) * _UNIT_S[u] for n, u in parts)
        now = time.time_ns() if now_ns is None else now_ns
        return max(now - int(ago * 1e9), 1)
    try:
        t = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{flag}: {text!r} is neither Unix nanoseconds, an ISO 8601 time nor a duration such as 1h or 30m"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.UTC)
    return int(t.timestamp() * 1_000_000) * 1000


def _entry_filter(args: argparse.Namespace) -> EntryFilter:
    return EntryFilter(
        since_unix_nano=_parse_time(args.since, "--since"),
        until_unix_nano=_parse_time(args.until, "--until"),
        outcome=_OUTCOMES[args.outcome] if args.outcome else 0,
        path_prefix=args.path_prefix or "",
        principal=args.principal or "",
    )


def _header_pairs(args: argparse.Namespace) -> list[tuple[str, str]]:
    pairs = []
    for item in args.header or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--header expects NAME=VALUE, got {item!r}")
        pairs.append((name.strip().lower(), value))
    return pairs


def _with_headers(entries: Iterator[StoredEntry], pairs: list[tuple[str, str]]) -> Iterator[StoredEntry]:
    """Entries whose recorded request carried every NAME=VALUE (read from the recorded input document, so a
    header the ledger stores as a digest, such as authorization, matches only its digest)."""
    if not pairs:
        yield from entries
        return
    for e in entries:
        if not e.message.input_json:
            continue
        try:
            headers = document_headers(orjson.loads(e.message.input_json))
        except ValueError:
            continue
        if all(headers.get(name) == value for name, value in pairs):
            yield e


def cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    flt = _entry_filter(args)
    pairs = _header_pairs(args)
    src = open_source(args)
    try:
        header = [False]
        found = src.entries(args.from_, args.to, None if pairs else args.limit, flt)
        for shown, e in enumerate(_with_headers(found, pairs)):
            if pairs and args.limit is not None and shown >= args.limit:
                break
            _print_entry(e, args.json, out, header=header)
    finally:
        src.close()
    return 0


def cmd_tail(args: argparse.Namespace, out: TextIO, stop: threading.Event | None = None) -> int:
    """The last ``-n`` entries (those matching the filters), then with ``-f`` every new matching one."""
    if args.lines < 0:
        raise InvalidRequestError(f"-n must be non-negative, got {args.lines}")
    flt = _entry_filter(args)
    pairs = _header_pairs(args)
    src = open_source(args)
    try:
        # -n counts matching entries: with a header filter (applied here, not by the source) look further back.
        start = 0 if pairs else src.tail_start(args.lines)
        last: collections.deque[StoredEntry] = collections.deque(maxlen=args.lines)
        if args.lines:
            last.extend(_with_headers(src.entries(start, None, None, flt), pairs))
        header = [False]
        for e in last:
            _print_entry(e, args.json, out, flush=True, header=header)
        if args.follow:
            follow_from = last[-1].index + 1 if last else start
            for e in _with_headers(src.follow(follow_from, flt, stop or threading.Event()), pairs):
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


def _source_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where to read (exactly one)")
    g.add_argument("--data-dir", metavar="DIR", help="a local ledger directory (read-only; safe while serving)")
    g.add_argument("--server", metavar="ADDR", help="a running server's audit API, e.g. 127.0.0.1:9192")
    t = p.add_argument_group("TLS for --server")
    t.add_argument("--ca", metavar="PEM", help="CA certificate(s) the server's certificate must chain to")
    t.add_argument("--cert", metavar="PEM", help="client certificate, for servers requiring mutual TLS")
    t.add_argument("--key", metavar="PEM", help="the client certificate's private key")


def _filter_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("filters (all must match)")
    g.add_argument(
        "--since",
        metavar="TIME",
        help="entries at or after TIME: ISO 8601 (UTC if no zone), Unix ns, or a duration ago (1h, 30m, 2d)",
    )
    g.add_argument("--until", metavar="TIME", help="entries before TIME")
    g.add_argument("--outcome", choices=sorted(_OUTCOMES), help="only this outcome")
    g.add_argument("--path-prefix", metavar="PREFIX", help="only request paths starting with PREFIX")
    g.add_argument("--principal", metavar="NAME", help="only this source or destination principal")
    g.add_argument(
        "--header",
        action="append",
        metavar="NAME=VALUE",
        help="only requests that carried this header value, e.g. --header x-user=alice (repeatable)",
    )


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

    ls = sub.add_parser("list", help="print entries in sequence order, filtered")
    _source_flags(ls)
    _filter_flags(ls)
    ls.add_argument("--from", dest="from_", type=non_negative, default=0, metavar="N", help="first index (default 0)")
    ls.add_argument("--to", type=non_negative, metavar="M", help="stop before index M (default: the current size)")
    ls.add_argument("--limit", type=non_negative, metavar="K", help="at most K entries")
    ls.add_argument("--json", action="store_true", help="one JSON object per line, as log --json")
    ls.set_defaults(func=cmd_list)

    t = sub.add_parser("tail", help="print the last entries; with -f, keep printing new ones")
    _source_flags(t)
    _filter_flags(t)
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
