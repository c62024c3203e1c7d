"""Export the ledger as JSON Lines: one object per entry, the same as ``authz-ledger log --json``.

Each object holds ``index``, ``decision_id``, ``entry_b64`` (the stored bytes) and the decoded fields. Appending
to an existing file resumes after its last complete line, after checking that line is this ledger's entry; a torn
last line (crash while writing) is cut off first. All entries come from one LMDB read transaction, so exporting
while the server writes is safe.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any, TextIO

from authz_ledger.errors import ConfigError, InvalidRequestError, LedgerCorruptError, LedgerError
from authz_ledger.ledger.store import Store, from_u64, u64
from authz_ledger.record import entry

_JSON_LINE = json.JSONEncoder(ensure_ascii=False)  # what json.dumps(..., ensure_ascii=False) builds per call


def jsonl_record(seq: int, data: bytes) -> dict[str, Any]:
    """The JSON object for one entry, as ``authz-ledger log --json`` prints it."""
    msg = entry.decode(data, seq)
    doc: dict[str, Any] = {
        "index": seq,
        "decision_id": msg.decision_id,
        "entry_b64": base64.b64encode(data).decode("ascii"),
    }
    doc.update(entry.to_json_fields(msg))
    return doc


def _last_line(f: Any) -> tuple[bytes | None, int]:
    """(last complete line without its newline, or None; length of the file's complete lines)."""
    end = f.seek(0, os.SEEK_END)
    pos, tail = end, b""
    chunk = 1 << 16
    while pos > 0:
        step = min(chunk, pos)
        pos -= step
        f.seek(pos)
        tail = f.read(step) + tail
        last_nl = tail.rfind(b"\n")
        if last_nl < 0:
            continue
        prev_nl = tail.rfind(b"\n", 0, last_nl)
        if prev_nl >= 0 or pos == 0:
            return tail[prev_nl + 1 : last_nl], pos + last_nl + 1
    return None, 0


def _resume_point(f: Any, path: Path, snap_entry: Any) -> int | None:
    """Where an existing JSONL file continues: the index after its last complete line (None: empty file).

    A torn last line is cut off. The last line must be this ledger's entry at its index (ConfigError otherwise),
    so a file is never continued with another ledger's entries.
    """
    line, complete = _last_line(f)
    f.truncate(complete)
    if line is None:
        return None
    try:
        doc = json.loads(line)
        index = int(doc["index"])
        stored = snap_entry(index)
        matches = stored is not None and base64.b64encode(stored).decode("ascii") == doc["entry_b64"]
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: last line is not an exported ledger entry ({e})") from e
    if not matches:
        raise ConfigError(f"{path}: last line (index {doc['index']}) is not this ledger's entry; use a new file")
    return index + 1


def export_jsonl(
    store: Store, path_or_stream: str | os.PathLike[str] | TextIO, start: int = 0, *, stop: int | None = None
) -> int:
    """Write entries ``start`` .. ``stop`` (default: all committed) as JSON Lines; return how many were written.

    A path is appended to: an existing file resumes after its last complete line (``start`` only applies to a
    new or empty file), and is fsynced at the end. A text stream gets entries from ``start`` and is not closed.
    All entries come from one read transaction.
    """
    if start < 0 or (stop is not None and stop < start):
        raise InvalidRequestError(f"bad entry range: start {start}, stop {stop}")
    if not isinstance(path_or_stream, str | os.PathLike):
        with store.env.begin(buffers=True) as txn:
            return _write_jsonl(store, txn, path_or_stream, start, stop)
    path = Path(path_or_stream)
    try:
        with store.env.begin(buffers=True) as txn:

            def stored_entry(i: int) -> bytes | None:
                v = txn.get(u64(i), db=store.entries)
                return None if v is None else bytes(v)

            with path.open("a+b") as f:
                resume = _resume_point(f, path, stored_entry)
            if resume is not None:
                start = resume
            if stop is not None and stop <= start:
                return 0
            with path.open("a", encoding="utf-8") as text:
                count = _write_jsonl(store, txn, text, start, stop)
                os.fsync(text.fileno())
            return count
    except OSError as e:
        raise LedgerError(f"cannot write {path}: {e}") from e


def _write_jsonl(store: Store, txn: Any, out: TextIO, start: int, stop: int | None) -> int:
    size = store.head(txn).size
    end = size if stop is None else min(stop, size)
    if start >= end:
        return 0
    cur = txn.cursor(store.entries)
    if not cur.set_key(u64(start)):
        raise LedgerCorruptError(f"entry {start} is missing", start)
    encode = _JSON_LINE.encode
    write = out.write
    expected = start
    for key, value in cur.iternext(keys=True, values=True):
        seq = from_u64(key)
        if seq >= end:
            break
        if seq != expected:
            raise LedgerCorruptError(f"entry {expected} is missing", expected)
        write(encode(jsonl_record(seq, bytes(value))) + "\n")
        expected += 1
    if expected != end:
        raise LedgerCorruptError(f"entry {expected} is missing", expected)
    out.flush()
    return end - start
