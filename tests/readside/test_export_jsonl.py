"""The JSON Lines export: every entry as ``log --json`` prints it, resumable, never mixed with another ledger's."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest

from authz_ledger.errors import ConfigError, InvalidRequestError
from authz_ledger.ledger.store import Store
from authz_ledger.readside.export_jsonl import export_jsonl
from authz_ledger.readside.export_tiles import export_tiles
from authz_ledger.record import entry
from authz_ledger.tlog import note
from tests.support.exports import append, read_jsonl


def test_jsonl_round_trips_every_entry_like_log_json(store: Store, signer: note.Signer, tmp_path: Path) -> None:
    append(store, signer, 120)
    path = tmp_path / "ledger.jsonl"
    assert export_jsonl(store, path) == 120
    docs = read_jsonl(path)
    assert [d["index"] for d in docs] == list(range(120))
    for doc, (seq, data) in zip(docs, store.iter_entries(), strict=True):
        assert base64.b64decode(doc["entry_b64"]) == data  # type: ignore[arg-type]
        msg = entry.decode(data, seq)
        assert doc["decision_id"] == msg.decision_id
        assert {k: doc[k] for k in entry.to_json_fields(msg)} == json.loads(json.dumps(entry.to_json_fields(msg)))


def test_jsonl_export_resumes_after_the_last_exported_entry(store: Store, signer: note.Signer, tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    append(store, signer, 50)
    assert export_jsonl(store, path) == 50
    assert export_jsonl(store, path) == 0
    append(store, signer, 30, seed=3)
    assert export_jsonl(store, path, start=0) == 30  # an existing file decides where to continue
    assert [d["index"] for d in read_jsonl(path)] == list(range(80))


def test_jsonl_export_cuts_a_torn_last_line_and_continues(store: Store, signer: note.Signer, tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    append(store, signer, 40)
    export_jsonl(store, path, stop=20)
    with path.open("a", encoding="utf-8") as f:
        f.write('{"index": 20, "decision_id": "01')  # a crash in the middle of a line
    assert export_jsonl(store, path) == 20
    assert [d["index"] for d in read_jsonl(path)] == list(range(40))


def test_jsonl_export_refuses_to_continue_another_ledgers_file(
    store: Store, signer: note.Signer, tmp_path: Path
) -> None:
    path = tmp_path / "ledger.jsonl"
    append(store, signer, 10)
    export_jsonl(store, path)
    lines = path.read_text(encoding="utf-8").splitlines()
    doc = json.loads(lines[-1])
    doc["entry_b64"] = base64.b64encode(b"not ours").decode()
    path.write_text("\n".join([*lines[:-1], json.dumps(doc)]) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not this ledger's entry"):
        export_jsonl(store, path)


def test_jsonl_export_to_a_stream_writes_the_requested_range(store: Store, signer: note.Signer) -> None:
    append(store, signer, 30)
    buf = io.StringIO()
    assert export_jsonl(store, buf, 10, stop=25) == 15
    assert [json.loads(line)["index"] for line in buf.getvalue().splitlines()] == list(range(10, 25))


def test_negative_sizes_and_ranges_are_invalid_requests(store: Store, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError):
        export_tiles(store, tmp_path, checkpoint_size=-1)
    with pytest.raises(InvalidRequestError):
        export_jsonl(store, io.StringIO(), -1)
    with pytest.raises(InvalidRequestError):
        export_jsonl(store, io.StringIO(), 5, stop=4)
