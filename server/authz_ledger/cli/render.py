"""What people read: the aligned table of ``list`` / ``tail`` and the ``key: value`` view of ``show``.

Machines read ``--json`` (cli/read.py, ``entry_doc``); nothing here is a contract beyond being aligned and
readable, so columns may be widened or added.
"""

from __future__ import annotations

import json

from authz_ledger.readside.values import StoredEntry, iso_time
from authz_ledger.record import entry

# The people's view of list / tail: one aligned row per entry, the path last (it has no useful width limit).
COLUMNS = (("INDEX", 8, ">"), ("TIME (UTC)", 24, "<"), ("OUTCOME", 7, "<"), ("HTTP", 4, ">"), ("METHOD", 7, "<"),
            ("HOST", 22, "<"), ("PRINCIPAL", 28, "<"), ("DECISION", 9, "<"))  # fmt: skip


def cell(text: str, width: int, align: str) -> str:
    if len(text) > width:
        text = text[: width - 1] + "…"
    return f"{text:{align}{width}}"


def table_header() -> str:
    return " ".join(cell(name, width, align) for name, width, align in COLUMNS) + " PATH"


def table_row(e: StoredEntry) -> str:
    m = e.message
    values = (
        str(e.index),
        iso_time(m.time_unix_nano),
        entry.OUTCOME_NAMES.get(m.outcome, "?") + ("*" if m.dry_run else ""),
        str(m.http_status or ""),
        m.method or "-",
        m.host or "-",
        m.source.principal or "-",
        "…" + m.decision_id[-8:],  # UUIDv7: the leading digits are the time, shared by every decision of a minute
    )
    row = " ".join(cell(v, width, align) for v, (_, width, align) in zip(values, COLUMNS, strict=True))
    return f"{row} {m.path or '-'}" + (f"  error: {m.error}" if m.error else "")


# A fleet's rows (list over several sources, or with --vkey) lead with the shard they come from, as wide as the
# longest origin (origins often differ only at the end), and whether they verified: "pending" is a row its
# shard's latest signed checkpoint does not cover yet.
VERIFIED_WIDTH = 8


def shard_table_header(shard_width: int) -> str:
    return f"{cell('SHARD', shard_width, '<')} {cell('VERIFIED', VERIFIED_WIDTH, '<')} {table_header()}"


def shard_table_row(shard_width: int, shard: str, verified: bool, e: StoredEntry) -> str:
    mark = "yes" if verified else "pending"
    return f"{cell(shard, shard_width, '<')} {cell(mark, VERIFIED_WIDTH, '<')} {table_row(e)}"


def _peer(address: str, port: int, principal: str) -> str:
    where = f"{address}:{port}" if address and port else address or "-"
    return f"{where}  {principal}" if principal else where


def entry_text(e: StoredEntry) -> str:
    """``show`` for people: one aligned ``key: value`` line per field, then the input and result as indented JSON."""
    m = e.message
    outcome = entry.OUTCOME_NAMES.get(m.outcome, "unspecified") + (
        " (dry run: Envoy was told allow)" if m.dry_run else ""
    )
    fields = [
        ("index", str(e.index)),
        ("decision id", m.decision_id),
        ("time", iso_time(m.time_unix_nano, digits=9)),
        ("outcome", outcome),
        ("http status", str(m.http_status or "-")),
        ("grpc code", str(m.grpc_code)),
        ("method", m.method or "-"),
        ("host", m.host or "-"),
        ("path", m.path or "-"),
        ("source", _peer(m.source.address, m.source.port, m.source.principal)),
        ("destination", _peer(m.destination.address, m.destination.port, m.destination.principal)),
        ("request id", m.request_id or "-"),
        ("engine", m.engine or "-"),
        ("decision path", m.decision_path or "-"),
        ("policy version", m.policy_version or "-"),
        ("evaluation", f"{m.eval_ns / 1e6:.3f} ms" if m.eval_ns else "-"),
        ("error", m.error or "-"),
    ]
    fields += [(name, getattr(m, name)) for name in ("traceparent", "tracestate", "b3") if getattr(m, name)]
    fields.append(("entry", f"{len(e.raw)} bytes"))
    width = max(len(name) for name, _ in fields) + 1
    lines = [f"{name + ':':<{width}} {value}" for name, value in fields]
    decoded = entry.to_json_fields(m)
    for name in ("input", "result"):
        value = decoded[name]
        if value is None:
            lines.append(f"{name + ':':<{width}} -")
            continue
        lines.append(f"{name}:")
        lines += ["  " + line for line in json.dumps(value, ensure_ascii=False, indent=2).splitlines()]
    return "\n".join(lines)
