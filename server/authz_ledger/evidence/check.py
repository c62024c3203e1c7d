"""Check an evidence pack offline with the log's verifier key, and name whatever does not hold.

What is proved, from the key alone (pack.py describes the members):

* checkpoint.txt and latest-checkpoint.txt are signed by the log's key (C2SP signed-note), for the same origin,
  and the consistency proof shows the latest tree extends the first (RFC 9162 §2.1.4.2);
* every line of entries.jsonl is byte for byte :func:`.pack.entry_line` of the entry bytes it carries, and
  those bytes are the leaf at its index in the signed tree (RFC 9162 §2.1.3.2, proofs from proof-nodes.txt);
* indexes rise; a complete pack has no gap; a filtered one holds only entries its selection matches;
* each key in vkeys.txt verifies a signature line of one of the checkpoints (so no byte of it goes unchecked);
  witness cosignatures verify with the witness keys the auditor pins, or are reported as checked only with the
  pack's own copy of the key;
* README.txt, report.html and manifest.json are rebuilt from the verified contents and must be the same bytes.

Every problem is a :class:`Finding` naming the member and the line or byte; the check goes on after one, so an
auditor sees all of them. The manifest's ``created_unix_nano`` and selection are the maker's statements: the
report shows them, but only the entries' contents are proved.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from authz_ledger.console import query
from authz_ledger.console.facts import Facts, facts_from, matches
from authz_ledger.errors import AuthzLedgerError, InvalidRequestError
from authz_ledger.evidence import pack
from authz_ledger.evidence.report import SignedTree, render_report
from authz_ledger.record import entry
from authz_ledger.tlog import cosignature, note, proof, tree
from authz_ledger.tlog.checkpoint import open_checkpoint
from authz_ledger.tlog.shared_proofs import SharedProofs

# The start of every entries.jsonl line (log --json's first three fields): enough to rebuild the whole line.
_LINE_HEAD = re.compile(rb'\{"index": (0|[1-9][0-9]*), "decision_id": "[^"\\]*", "entry_b64": "([A-Za-z0-9+/=]*)"')
MAX_FINDINGS = 100


@dataclass(frozen=True)
class Finding:
    member: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.member}{' ' + self.where if self.where else ''}: {self.message}"


@dataclass
class Verdict:
    findings: list[Finding] = field(default_factory=list)
    manifest: pack.Manifest | None = None
    entries: int = 0
    checkpoint: SignedTree | None = None
    latest: SignedTree | None = None
    cosigned_by: list[tuple[str, int, bool]] = field(default_factory=list)
    """(witness name, cosignature timestamp, whether its key was pinned by the caller) of verified cosignatures."""
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, member: str, where: str, message: str) -> None:
        if len(self.findings) < MAX_FINDINGS:
            self.findings.append(Finding(member, where, message))
        else:
            self.truncated = True

    def as_json(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "ok": self.ok,
            "origin": m.origin if m else None,
            "entries": self.entries,
            "complete": m.complete if m else None,
            "first_index": m.first_index if m else None,
            "end_index": m.end_index if m else None,
            "checkpoint_size": self.checkpoint.checkpoint.size if self.checkpoint else None,
            "latest_size": self.latest.checkpoint.size if self.latest else None,
            "cosigned_by": [{"witness": n, "timestamp": t, "pinned": p} for n, t, p in self.cosigned_by],
            "findings": [{"member": f.member, "where": f.where, "message": f.message} for f in self.findings],
        }


def _first_difference(stored: bytes, rebuilt: bytes) -> str:
    """Where two texts first differ: the byte offset, its line, and the stored text around it."""
    at = next(
        (i for i, (x, y) in enumerate(zip(stored, rebuilt, strict=False)) if x != y), min(len(stored), len(rebuilt))
    )
    line = stored.count(b"\n", 0, at) + 1
    start = max(stored.rfind(b"\n", 0, at) + 1, at - 40)
    end = stored.find(b"\n", at)
    end = min(end if end >= 0 else len(stored), at + 40)
    shown = stored[start:end].decode("utf-8", "replace")
    return f"byte {at}" + (f", line {line}" if b"\n" in stored else "") + f": {shown!r}"


def _compare(v: Verdict, member: str, stored: bytes | None, rebuilt: bytes, what: str) -> None:
    if stored is not None and stored != rebuilt:
        v.add(member, "", f"differs from {what} at {_first_difference(stored, rebuilt)}")


def witness_verifier(vkey: str) -> note.Verifier:
    """A witness key: a C2SP tlog-cosignature key (type 0x04), else a plain signed-note Ed25519 key."""
    try:
        return cosignature.CosignatureVerifier.from_vkey(vkey)
    except AuthzLedgerError:
        return note.Verifier.from_vkey(vkey)


def _pack_keys(v: Verdict, data: bytes | None) -> list[note.Verifier]:
    keys: list[note.Verifier] = []
    for n, line in enumerate((data or b"").decode("utf-8", "replace").split("\n")[:-1], start=1):
        try:
            keys.append(witness_verifier(line))
        except AuthzLedgerError as e:
            v.add(pack.VKEYS, f"line {n}", f"not a verifier key: {e}")
    if data and not data.endswith(b"\n"):
        v.add(pack.VKEYS, "", "the last line has no newline")
    return keys


def _open(
    v: Verdict, member: str, data: bytes | None, keys: Sequence[note.Verifier], origin: str | None
) -> SignedTree | None:
    if data is None:
        return None
    try:
        cp, opened = open_checkpoint(data, keys, origin)
    except AuthzLedgerError as e:
        v.add(member, "", f"does not verify with the log's key: {e}")
        return None
    return SignedTree(cp, tuple(s.name for s in opened.signatures))


def _opened_with(signed: bytes | None, key: note.Verifier) -> note.Note | None:
    """The note ``signed`` opened with ``key`` alone, or None when no signature line of it verifies with it."""
    if signed is None:
        return None
    try:
        return note.open_note(signed, [key])
    except AuthzLedgerError:
        return None


def verifies(signed: bytes | None, key: note.Verifier) -> bool:
    return _opened_with(signed, key) is not None


def _checkpoints(v: Verdict, m: dict[str, bytes], log_keys: Sequence[note.Verifier], witnesses: Sequence[str]) -> None:
    pinned = [witness_verifier(w) for w in witnesses]
    in_pack = _pack_keys(v, m.get(pack.VKEYS))
    origin = v.manifest.origin if v.manifest else None
    keys = [*log_keys, *pinned]
    v.checkpoint = _open(v, pack.CHECKPOINT, m.get(pack.CHECKPOINT), keys, origin)
    v.latest = _open(v, pack.LATEST, m.get(pack.LATEST), keys, origin)
    used = {
        k for k, key in enumerate(in_pack) if any(verifies(m.get(name), key) for name in (pack.CHECKPOINT, pack.LATEST))
    }
    signed = m.get(pack.CHECKPOINT)
    for key in dict.fromkeys([*pinned, *in_pack]):  # each witness once, pinned first
        cosigned = _opened_with(signed, key) if isinstance(key, cosignature.CosignatureVerifier) else None
        if cosigned is not None:
            v.cosigned_by.append((key.name, cosignature.timestamp_of(cosigned.verified[0].sig), key in pinned))
    for k in range(len(in_pack)):
        if k not in used and v.checkpoint is not None and v.latest is not None:
            v.add(pack.VKEYS, f"line {k + 1}", "this key verifies no signature line of the pack's checkpoints")
    if v.checkpoint and v.latest:
        _consistency(v, m.get(pack.CONSISTENCY), v.checkpoint, v.latest)


def _consistency(v: Verdict, data: bytes | None, old: SignedTree, new: SignedTree) -> None:
    if data is None:
        return
    a, b = old.checkpoint, new.checkpoint
    try:
        proof.verify_consistency(a.size, b.size, a.root, b.root, pack.parse_hashes(data))
    except AuthzLedgerError as e:
        v.add(pack.CONSISTENCY, "", f"does not prove the latest tree extends the pack's: {e}")


def _selection_query(v: Verdict) -> query.Query | None:
    if v.manifest is None:
        return None
    sel = v.manifest.selection
    try:
        q = query.parse(sel.filter)
    except InvalidRequestError as e:
        v.add(pack.MANIFEST, "", f"the selection's filter does not parse: {e}")
        return None
    return replace(q, since_ns=sel.since_ns, until_ns=sel.until_ns)


def _entries(v: Verdict, m: dict[str, bytes]) -> list[Facts]:
    """Check entries.jsonl line by line; return the facts of every line that matches its own entry bytes."""
    data = m.get(pack.ENTRIES)
    if data is None or v.checkpoint is None or pack.NODES not in m:
        return []
    try:
        nodes = pack.parse_nodes(m[pack.NODES])
    except AuthzLedgerError as e:
        v.add(pack.NODES, "", str(e))
        return []
    proofs = SharedProofs(v.checkpoint.checkpoint.size, v.checkpoint.checkpoint.root, nodes)
    headers = v.manifest.user_headers if v.manifest else ()
    q = _selection_query(v)
    complete = v.manifest is not None and not v.manifest.selection.filter
    facts: list[Facts] = []
    failed: list[tuple[int, int, str]] = []  # (line, index, decision id) whose path did not reach the root
    lines = data.split(b"\n")
    if lines[-1]:
        v.add(pack.ENTRIES, "", "the last line has no newline")
    last = -1
    for n, line in enumerate(lines[:-1], start=1):
        where = f"line {n}"
        head = _LINE_HEAD.match(line)
        if head is None:
            v.add(pack.ENTRIES, where, "does not start like an entry of log --json (index, decision_id, entry_b64)")
            continue
        index = int(head[1])
        where = f"line {n} (index {index})"
        if index <= last:
            v.add(pack.ENTRIES, where, f"index {index} does not follow index {last}")
        elif complete and last >= 0 and index != last + 1:
            v.add(pack.ENTRIES, where, f"entries {last + 1} to {index - 1} are missing from a complete pack")
        last = max(last, index)
        try:
            raw = binascii.a2b_base64(head[2], strict_mode=True)
            rebuilt = pack.entry_line(index, raw)
        except (binascii.Error, AuthzLedgerError) as e:
            v.add(pack.ENTRIES, where, f"entry_b64 is not the bytes of a ledger entry: {e}")
            continue
        if rebuilt != line:
            v.add(pack.ENTRIES, where, f"does not match its own entry bytes at {_first_difference(line, rebuilt)}")
            continue
        f = facts_from(index, entry.decode(raw, index), headers)
        facts.append(f)
        try:
            reached = proofs.reaches_root(index, tree.leaf_hash(raw))
        except AuthzLedgerError as e:
            v.add(pack.NODES, "", f"entry {index} (entries.jsonl line {n}): {e}")
            continue
        if not reached:
            failed.append((n, index, f.decision_id))
        elif q is not None and not complete and not matches(q, f):
            v.add(pack.ENTRIES, where, "does not match the pack's selection (time window and filter)")
        else:
            v.entries += 1
    if complete and q is not None and facts:
        for f, which in ((facts[0], "first"), (facts[-1], "last")):
            if not matches(q, f):
                v.add(pack.ENTRIES, f"index {f.seq}", f"the {which} entry of the run is outside the time window")
    _name_failures(v, m, proofs, failed)
    return facts


def _digest_differs(v: Verdict, m: dict[str, bytes], member: str) -> bool:
    return v.manifest is not None and member in m and v.manifest.digests.get(member) != pack.sha256_hex(m[member])


def _name_failures(v: Verdict, m: dict[str, bytes], proofs: SharedProofs, failed: list[tuple[int, int, str]]) -> None:
    """A path that missed the root holds a changed entry or a changed proof hash; name which when the pack
    shows it. A table hash that contradicts the hash verified walks computed for the same subtree is wrong (the
    root proves the computed one); a hash no verified walk used, shared by every failing entry, is the changed
    one; otherwise the manifest's digests tell which file changed (a hint, not a proof: either way the pack
    fails)."""
    if not failed:
        return
    lines = {r: n for n, r in enumerate(proofs.nodes, start=1)}
    wrong = sorted({r for _, i, _ in failed for r in proofs.contradicted(i)})
    unproved = [{r for r in proofs.path_ranges(i) if r not in proofs.used} for _, i, _ in failed]
    if not wrong and len(failed) > 1:
        wrong = sorted(set.intersection(*unproved))[:1]
    if not wrong and _digest_differs(v, m, pack.NODES) and not _digest_differs(v, m, pack.ENTRIES):
        wrong = sorted(set().union(*unproved))
        suspects = ", ".join(f"line {lines[r]}" for r in wrong if r in lines)
        v.add(pack.NODES, suspects, f"changed: the inclusion path of entry {failed[0][1]} no longer leads to the root")
        return
    for lo, hi in wrong:
        v.add(
            pack.NODES,
            f"line {lines.get((lo, hi))} (subtree [{lo}, {hi}))",
            "its hash is wrong: "
            f"the {len(failed)} entr{'y' if len(failed) == 1 else 'ies'} whose proofs use it do not verify",
        )
    if wrong:
        return
    for n, index, decision_id in failed:
        v.add(
            pack.ENTRIES,
            f"line {n} (index {index})",
            f"decision {decision_id} was changed: its bytes do not lead to the signed root",
        )


def _derived(v: Verdict, m: dict[str, bytes], facts: list[Facts]) -> None:
    """README, report and manifest, rebuilt from what verified, must be the stored bytes. The report and the
    manifest are rebuilt once everything else verified: before that they would differ only because of what is
    already named."""
    _compare(v, pack.README, m.get(pack.README), pack.README_TEXT.encode(), "the README of this format")
    if (
        v.manifest is None
        or v.checkpoint is None
        or v.latest is None
        or any(f.member != pack.README for f in v.findings)
    ):
        return
    _compare(
        v,
        pack.REPORT,
        m.get(pack.REPORT),
        render_report(v.manifest, facts, v.checkpoint, v.latest),
        "the report of the verified entries",
    )
    named = {f.member for f in v.findings}
    rebuilt = replace(
        v.manifest,
        complete=not v.manifest.selection.filter,
        first_index=facts[0].seq if facts else 0,
        end_index=facts[-1].seq + 1 if facts else 0,
        entries=len(facts),
        checkpoint_size=v.checkpoint.checkpoint.size,
        latest_size=v.latest.checkpoint.size,
        # A member already named keeps the digest the manifest lists: the manifest is named only for its own bytes.
        digests={
            name: v.manifest.digests.get(name, "") if name in named else pack.sha256_hex(m[name])
            for name in pack.MEMBERS[:-1]
            if name in m
        },
    )
    _compare(v, pack.MANIFEST, m.get(pack.MANIFEST), rebuilt.to_bytes(), "the manifest of the pack's members")


def check_pack(archive: bytes, log_keys: Sequence[note.Verifier], *, witnesses: Sequence[str] = ()) -> Verdict:
    """Check every member of the pack; the verdict lists every finding (none: verified)."""
    with pack.bulk():
        return _check(archive, log_keys, witnesses)


def _check(archive: bytes, log_keys: Sequence[note.Verifier], witnesses: Sequence[str]) -> Verdict:
    v = Verdict()
    opened = pack.read_zip(archive)
    for member, reason in opened.problems:
        v.add(member, "", reason)
    m = opened.members
    if pack.MANIFEST in m:
        try:
            v.manifest = pack.Manifest.parse(m[pack.MANIFEST])
        except AuthzLedgerError as e:
            v.add(pack.MANIFEST, "", str(e))
    _checkpoints(v, m, log_keys, witnesses)
    facts = _entries(v, m)
    _derived(v, m, facts)
    return v
