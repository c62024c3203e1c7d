"""Write an evidence pack from a ledger: select, prove, and check the result before handing it out.

The pack proves its entries against the first checkpoint that covers them all (the one that committed the last
of them), and carries the consistency proof from it to the latest checkpoint: the auditor sees both when the
decisions were committed and that nothing changed after. Both checkpoints are taken in their witness-cosigned
form when witnesses cosigned them. Fail closed: both checkpoints are opened with the given keys, the consistency
proof is checked, and every entry's inclusion proof is verified from the bytes read before the archive is
returned, so a damaged ledger can never produce a pack that claims otherwise.

Safe while ``serve`` runs: read-only transactions; the entries, proof hashes and checkpoints all describe trees
that were already signed, so a concurrent append changes none of them.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from authz_ledger.config import DEFAULT_USER_HEADERS
from authz_ledger.console import query
from authz_ledger.console.facts import Facts, facts_from, matches
from authz_ledger.errors import LedgerCorruptError, NotFoundError
from authz_ledger.evidence import pack
from authz_ledger.evidence.check import verifies, witness_verifier
from authz_ledger.evidence.report import SignedTree, render_report
from authz_ledger.ledger.store import Store
from authz_ledger.readside.reader import LedgerReader
from authz_ledger.readside.values import EntryFilter, SignedCheckpoint, StoredEntry
from authz_ledger.tlog import note, tree
from authz_ledger.tlog.checkpoint import open_checkpoint
from authz_ledger.tlog.shared_proofs import SharedProofs, collect_nodes


@dataclass(frozen=True)
class Built:
    archive: bytes
    manifest: pack.Manifest
    checkpoint: SignedTree
    latest: SignedTree


def _select(
    reader: LedgerReader, q: query.Query, sel: pack.Selection, user_headers: Sequence[str]
) -> tuple[list[StoredEntry], list[Facts], bool]:
    """The entries of the pack in index order, their facts, and whether the run is complete (no filter)."""
    window = EntryFilter(since_unix_nano=sel.since_ns, until_unix_nano=sel.until_ns)
    if q.is_empty:
        # Every entry of the run from the first to the last entry in the window, whatever its time: an
        # unfiltered pack has no gap. The time index finds the run without reading it; else one scan does.
        span = reader.store.seqs_in_time_range(sel.since_ns, sel.until_ns, max_listed=0)
        if span is None:
            indexes = [e.index for e in reader.list_entries(filter=window)]
            first, last = (indexes[0], indexes[-1]) if indexes else (0, -1)
        else:
            first, last = span.first, span.last
        if first > last:
            raise NotFoundError("no decision was recorded in that time window")
        chosen = list(reader.list_entries(first, last + 1))
        return chosen, [facts_from(e.index, e.message, user_headers) for e in chosen], True
    chosen, facts = [], []
    for e in reader.list_entries(filter=window):
        f = facts_from(e.index, e.message, user_headers)
        if matches(q, f):
            chosen.append(e)
            facts.append(f)
    if not chosen:
        raise NotFoundError("no decision in that time window matches the filter")
    return chosen, facts, False


def _signed_tree(signed: SignedCheckpoint, verifiers: Sequence[note.Verifier]) -> SignedTree:
    cp, opened = open_checkpoint(signed.note, verifiers, signed.origin)
    return SignedTree(cp, tuple(s.name for s in opened.signatures))


def _signing_keys(
    notes: Sequence[bytes], verifiers: Sequence[note.Verifier], witness_vkeys: Sequence[str]
) -> list[note.Verifier]:
    """The log's and the witnesses' keys that verify a signature line of ``notes``: vkeys.txt lists only keys
    the pack uses, so the check can hold every byte of it to a signature."""
    keys = [*verifiers, *(witness_verifier(w) for w in witness_vkeys)]
    return [k for k in dict.fromkeys(keys) if any(verifies(n, k) for n in notes)]


def _proof_nodes(store: Store, indexes: Sequence[int], size: int) -> dict[tuple[int, int], bytes]:
    """The hash of every subtree on some entry's inclusion path in the tree of ``size`` leaves, read at once."""
    ranges = collect_nodes(indexes, size)
    with store.read_txn() as txn:
        hashes = tree.range_hashes(ranges, functools.partial(store.read_hashes, txn=txn))
    return dict(zip(ranges, hashes, strict=True))


def build_pack(
    store: Store,
    verifiers: Sequence[note.Verifier],
    selection: pack.Selection,
    *,
    witness_vkeys: Sequence[str] = (),
    user_headers: Sequence[str] = DEFAULT_USER_HEADERS,
    created_ns: int | None = None,
) -> Built:
    """The archive for ``selection``, its checkpoints opened with ``verifiers`` and every proof checked."""
    with pack.bulk():
        return _build(store, verifiers, selection, witness_vkeys, user_headers, created_ns)


def _build(
    store: Store,
    verifiers: Sequence[note.Verifier],
    selection: pack.Selection,
    witness_vkeys: Sequence[str],
    user_headers: Sequence[str],
    created_ns: int | None,
) -> Built:
    q = replace(query.parse(selection.filter), since_ns=selection.since_ns, until_ns=selection.until_ns)
    filter_only = replace(q, since_ns=0, until_ns=0)
    reader = LedgerReader(store)
    chosen, facts, complete = _select(reader, filter_only, selection, user_headers)
    first, end = chosen[0].index, chosen[-1].index + 1
    at = reader.checkpoint_covering(end)
    latest_size = reader.checkpoint().size
    latest = reader.checkpoint(latest_size, cosigned=True)
    checkpoint, newest = _signed_tree(at, verifiers), _signed_tree(latest, verifiers)
    consistency = reader.consistency_proof(at.size, latest.size)
    if consistency.root1 != at.root or consistency.root2 != latest.root:
        raise LedgerCorruptError("the stored tree does not hash to the roots its checkpoints sign")
    nodes = _proof_nodes(store, [e.index for e in chosen], at.size)
    manifest = pack.Manifest(
        origin=at.origin,
        selection=pack.Selection(selection.since_ns, selection.until_ns, filter_only.text()),
        created_ns=time.time_ns() if created_ns is None else created_ns,
        complete=complete,
        first_index=first,
        end_index=end,
        entries=len(chosen),
        checkpoint_size=at.size,
        latest_size=latest.size,
        user_headers=tuple(user_headers),
    )
    members = {
        pack.README: pack.README_TEXT.encode(),
        pack.CHECKPOINT: at.note,
        pack.LATEST: latest.note,
        pack.CONSISTENCY: pack.format_hashes(consistency.hashes),
        pack.NODES: pack.format_nodes(nodes),
        pack.ENTRIES: b"".join(pack.entry_line(e.index, e.raw) + b"\n" for e in chosen),
        pack.VKEYS: "".join(
            k.vkey() + "\n" for k in _signing_keys((at.note, latest.note), verifiers, witness_vkeys)
        ).encode(),
        pack.REPORT: render_report(manifest, facts, checkpoint, newest),
    }
    manifest = replace(manifest, digests={name: pack.sha256_hex(members[name]) for name in pack.MEMBERS[:-1]})
    members[pack.MANIFEST] = manifest.to_bytes()
    # Fail closed: every entry's proof, from the bytes read, must reach the signed root. (The lines, report
    # and manifest are what check.py rebuilds them to: the same functions made them.)
    proofs = SharedProofs(at.size, at.root, nodes)
    for e in chosen:
        proofs.verify(e.index, tree.leaf_hash(e.raw))
    return Built(pack.write_zip(members), manifest, checkpoint, newest)
