"""Ledgers for the export tests: entries appended by the real writer, checkpoints signed at any stored size;
reading a JSON Lines export back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from authz_ledger.ledger.queue import Pending
from authz_ledger.ledger.store import Store
from authz_ledger.ledger.writer import Durability
from authz_ledger.record import entry
from authz_ledger.record.entry import DecisionRecord
from authz_ledger.record.ids import new_decision_id
from authz_ledger.tlog import checkpoint, note, tree
from tests.conftest import make_writer


def bodies(count: int, seed: int = 0) -> Iterator[tuple[bytes, bytes]]:
    """(entry body, decision id bytes) of ``count`` allow decisions of varied sizes."""
    for i in range(count):
        did = new_decision_id()
        body = DecisionRecord(
            time_unix_nano=1_700_000_000_000_000_000 + i,
            decision_id=str(did),
            method="GET",
            path="/items/" + "x" * ((i * 7919 + seed) % 300),
            input_json=json.dumps({"i": i, "seed": seed}).encode(),
            outcome=entry.OUTCOME_ALLOW,
            allowed=True,
            http_status=200,
        ).encode()
        yield body, did.bytes


def append(store: Store, signer: note.Signer, count: int, seed: int = 0) -> None:
    """Append ``count`` entries with a fresh writer; its close publishes a checkpoint at the new size."""
    writer = make_writer(store, signer, durability=Durability.ASYNC, queue_size=count + 1)
    for body, decision_id in bodies(count, seed):
        writer._queue.put(Pending(body, decision_id, False), 0)
    writer.start()
    writer.close()


def publish_checkpoint_at(store: Store, signer: note.Signer, size: int) -> None:
    """Sign the stored tree at ``size`` (any size up to the head) as the log would have."""
    if store.checkpoint(size) is None:
        root = tree.tree_hash(size, store.read_hashes)
        store.put_checkpoint(size, checkpoint.sign_checkpoint(checkpoint.Checkpoint(signer.name, size, root), [signer]))


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
