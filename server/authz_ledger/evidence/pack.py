"""The evidence pack's bytes: one ZIP archive an auditor keeps, that proves what it holds with only the log's key.

Members, in this order (docs/evidence-pack.md describes each byte; nothing else may be in the archive)::

    README.txt              how to check the pack (fixed text for this format version)
    checkpoint.txt          the signed checkpoint every inclusion proof leads to (C2SP tlog-checkpoint in a
                            C2SP signed note, with the witnesses' cosignatures when they cosigned it)
    latest-checkpoint.txt   the log's latest signed checkpoint when the pack was made (same forms)
    consistency-proof.txt   RFC 9162 §2.1.4 PROOF(checkpoint size, latest size): one base64 hash per line
    proof-nodes.txt         ``<lo> <hi> <base64 hash>`` per line, sorted: the hash of every subtree [lo, hi) on
                            the RFC 9162 §2.1.3.1 inclusion path of some entry of the pack. Entry i's inclusion
                            proof is the hashes of ``tlog.proof.inclusion_ranges(i, size)`` in that order, so
                            each entry is proved on its own and a changed entry fails alone (it is named), while
                            the subtrees the entries share are stored once.
    entries.jsonl           the selected entries in index order, one JSON object per line with the fields
                            ``authz-ledger log --json`` prints, in its order: index, decision_id, entry_b64 (the
                            bytes the leaf hash is of) and the fields decoded from them -- except that ``input``
                            and ``result`` come last and are the recorded JSON text itself (:func:`entry_line`)
    vkeys.txt               the verifier keys of the log, then those of the witnesses (C2SP signed-note vkeys)
    report.html             the human-readable report: self-contained HTML, no scripts
    manifest.json           what was selected and the SHA-256 of every other member

Why ZIP: every member carries its own CRC-32, so a byte damaged in transit is named by member by any unzip
tool; members are deflated (the base64 of neighbouring entries' shared proof hashes and the JSON field names
compress well) and browsers inflate them natively (DecompressionStream), so the console checks a dropped pack
without uploading it. Timestamps in the archive are fixed: the same selection of the same log, made with the same
``created_unix_nano`` (the manifest's one statement of when), gives the same bytes.

Nothing here is trusted because the pack says so: entries and proofs are checked against the signed checkpoint,
the witness keys against the cosignatures they made, and the README, report and manifest are rebuilt from the
verified contents and compared byte for byte (:mod:`.check`). Pure: no storage, no network.
"""

from __future__ import annotations

import base64
import binascii
import gc
import hashlib
import io
import json
import re
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from authz_ledger.errors import ProofError
from authz_ledger.record import entry
from authz_ledger.tlog import tree

FORMAT = "authz-ledger-evidence/1"
FILE_EXTENSION = ".evidence.zip"

README = "README.txt"
CHECKPOINT = "checkpoint.txt"
LATEST = "latest-checkpoint.txt"
CONSISTENCY = "consistency-proof.txt"
NODES = "proof-nodes.txt"
ENTRIES = "entries.jsonl"
VKEYS = "vkeys.txt"
REPORT = "report.html"
MANIFEST = "manifest.json"
MEMBERS = (README, CHECKPOINT, LATEST, CONSISTENCY, NODES, ENTRIES, VKEYS, REPORT, MANIFEST)

_LINE = json.JSONEncoder(ensure_ascii=False)  # log --json's encoder (json.dumps with ensure_ascii=False)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # ZIP's earliest date: the archive's bytes depend only on what it holds
_NODE_LINE = re.compile(rb"(0|[1-9][0-9]*) (0|[1-9][0-9]*) ([A-Za-z0-9+/]{43}=)")

README_TEXT = f"""\
authz-ledger evidence pack ({FORMAT})

This archive proves, to anyone holding the log's public verifier key, that each decision in entries.jsonl was
recorded in the log, unaltered, at its index, and that the log has only grown since: nothing was removed or
rewritten between checkpoint.txt and latest-checkpoint.txt.

Check it offline with the verifier key you obtained from the log's operator (not the one in vkeys.txt):

    authz-ledger verify-evidence THIS-FILE --vkey 'origin+keyid+base64'

or drop it on the /verify page of an authz-ledger audit console (it is checked in the browser). A byte changed
anywhere in the archive is named by the check. report.html is the human-readable summary; entries.jsonl has one
JSON object per decision (entry_b64 holds the exact bytes that were hashed).

Format of every member: docs/evidence-pack.md in the authz-ledger source.
"""


@dataclass(frozen=True)
class Selection:
    """What the pack was asked to hold: a time window and a query (the console's query language, no times)."""

    since_ns: int
    until_ns: int
    filter: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"since_unix_nano": self.since_ns, "until_unix_nano": self.until_ns, "filter": self.filter}


@dataclass(frozen=True)
class Manifest:
    """manifest.json: the selection, what the pack holds, and the SHA-256 of every other member.

    ``complete`` means no filter was applied: the pack holds every entry of indexes [first_index, end_index),
    the run of the log whose decision times the time index placed in the window (entries of that run whose
    time falls just outside it are included too, so the run has no gap). With a filter, only matching entries
    are included and the pack cannot show that no other entry matched.
    """

    origin: str
    selection: Selection
    created_ns: int
    complete: bool
    first_index: int
    end_index: int
    entries: int
    checkpoint_size: int
    latest_size: int
    user_headers: tuple[str, ...]
    digests: Mapping[str, str] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        doc = {
            "format": FORMAT,
            "origin": self.origin,
            "created_unix_nano": self.created_ns,
            "selection": self.selection.as_json(),
            "complete": self.complete,
            "first_index": self.first_index,
            "end_index": self.end_index,
            "entries": self.entries,
            "checkpoint_size": self.checkpoint_size,
            "latest_size": self.latest_size,
            "user_headers": list(self.user_headers),
            "sha256": dict(self.digests),
        }
        return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()

    @classmethod
    def parse(cls, data: bytes) -> Manifest:
        """ProofError naming the first field that is missing or of the wrong type."""
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ProofError(f"not JSON: {e}") from None
        if not isinstance(doc, dict):
            raise ProofError("not a JSON object")
        if doc.get("format") != FORMAT:
            raise ProofError(f"format is {doc.get('format')!r}, this version reads {FORMAT!r}")
        sel = _field(doc, "selection", dict)
        digests = _field(doc, "sha256", dict)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in digests.items()):
            raise ProofError("sha256 must map member names to hex digests")
        return cls(
            origin=_field(doc, "origin", str),
            selection=Selection(
                _field(sel, "since_unix_nano", int), _field(sel, "until_unix_nano", int), _field(sel, "filter", str)
            ),
            created_ns=_field(doc, "created_unix_nano", int),
            complete=_field(doc, "complete", bool),
            first_index=_field(doc, "first_index", int),
            end_index=_field(doc, "end_index", int),
            entries=_field(doc, "entries", int),
            checkpoint_size=_field(doc, "checkpoint_size", int),
            latest_size=_field(doc, "latest_size", int),
            user_headers=tuple(str(h) for h in _field(doc, "user_headers", list)),
            digests=digests,
        )


def _field(doc: Mapping[str, Any], name: str, kind: type) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProofError(f"field {name!r} is missing or not a {kind.__name__}")
    return value


def _document(text: bytes) -> bytes:
    """A recorded JSON document as it goes into a line: the recorded text itself when it is JSON on one line
    (so the line shows exactly what was recorded, large integers included), else what ``log --json`` shows."""
    if not text:
        return b"null"
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    else:
        if b"\n" not in text and b"\r" not in text:
            return text
    return json.dumps({"undecodable": text.decode("utf-8", "replace")}, ensure_ascii=False).encode()


def entry_line(index: int, data: bytes) -> bytes:
    """entries.jsonl's line for the entry ``data`` at ``index`` (without its newline): a pure function of the
    bytes, so the check rebuilds it and names the first byte that differs. LedgerCorruptError when ``data`` is
    not a LedgerEntry. The base64 and the documents' text are placed, not re-encoded (neither needs escaping):
    that is what makes a pack of 100k entries quick to write and to check."""
    msg = entry.decode(data, index)
    decoded = entry.to_json_fields(msg, documents=False)
    del decoded["decision_id"]  # placed second, as log --json places it (each key once)
    fields = _LINE.encode(decoded).encode()
    return b'{"index": %d, "decision_id": %s, "entry_b64": "%s", %s, "input": %s, "result": %s}' % (
        index,
        _LINE.encode(msg.decision_id).encode(),
        base64.b64encode(data),
        fields[1:-1],
        _document(msg.input_json),
        _document(msg.result_json),
    )


@contextmanager
def bulk() -> Iterator[None]:
    """Pause the cycle collector while a pack is made or checked: it would rescan the hundred thousand entries'
    objects again and again as they pile up (a quarter of the time), and none of them form cycles."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- Proof hashes as text ---------------------------------------------------------------------------------


def format_hashes(hashes: Iterable[bytes]) -> bytes:
    return b"".join(base64.b64encode(h) + b"\n" for h in hashes)


def parse_hashes(data: bytes) -> list[bytes]:
    """One canonical base64 SHA-256 hash per line; ProofError naming the line."""
    out = []
    for n, line in enumerate(data.split(b"\n")[:-1] if data else [], start=1):
        out.append(_hash(line, n))
    if data and not data.endswith(b"\n"):
        raise ProofError("the last line has no newline")
    return out


def _hash(text: bytes, line: int) -> bytes:
    try:
        h = binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error:
        raise ProofError(f"line {line}: not base64") from None
    if len(h) != tree.HASH_SIZE or base64.b64encode(h) != text:
        raise ProofError(f"line {line}: not the canonical base64 of a {tree.HASH_SIZE}-byte hash")
    return h


def format_nodes(nodes: Mapping[tuple[int, int], bytes]) -> bytes:
    return b"".join(b"%d %d %s\n" % (lo, hi, base64.b64encode(nodes[lo, hi])) for lo, hi in sorted(nodes))


def parse_nodes(data: bytes) -> dict[tuple[int, int], bytes]:
    """proof-nodes.txt: strictly sorted ``lo hi hash`` lines; ProofError naming the first bad line."""
    out: dict[tuple[int, int], bytes] = {}
    last = (-1, -1)
    lines = data.split(b"\n")
    if lines[-1]:
        raise ProofError("the last line has no newline")
    for n, line in enumerate(lines[:-1], start=1):
        m = _NODE_LINE.fullmatch(line)
        if m is None:
            raise ProofError(f"line {n}: want '<lo> <hi> <base64 hash>'")
        key = (int(m[1]), int(m[2]))
        if key <= last or key[0] >= key[1]:
            raise ProofError(f"line {n}: ranges must be non-empty and strictly sorted")
        out[key] = _hash(m[3], n)
        last = key
    return out


# --- The archive ------------------------------------------------------------------------------------------


def write_zip(members: Mapping[str, bytes]) -> bytes:
    """The archive of ``members`` in :data:`MEMBERS` order, deflated, with fixed timestamps and modes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name in MEMBERS:
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, members[name], compresslevel=1)
    return buf.getvalue()


@dataclass
class Opened:
    """The members that could be read, and what stopped the others (member name -> reason)."""

    members: dict[str, bytes] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)


def read_zip(data: bytes) -> Opened:
    """Read every member, checking each one's CRC-32: a damaged member is named, the others are still read."""
    opened = Opened()
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        opened.problems.append(("(archive)", f"not a ZIP archive, or its directory is damaged: {e}"))
        return opened
    with z:
        names = [i.filename for i in z.infolist()]
        for name in names:
            if name not in MEMBERS:
                opened.problems.append((name, "is not part of an evidence pack (unexpected member)"))
            elif names.count(name) > 1:
                opened.problems.append((name, "appears more than once"))
        for name in MEMBERS:
            if name not in names:
                opened.problems.append((name, "is missing"))
                continue
            try:
                opened.members[name] = z.read(name)
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, RuntimeError) as e:
                # zipfile names a bad CRC-32 ("Bad CRC-32 for file ..."), a bad local header or bad deflate data
                opened.problems.append((name, f"cannot be read: {e}"))
    return opened
