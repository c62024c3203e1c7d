"""Evidence packs made from real ledgers (real writer, real LMDB, real signing keys) and checked offline: a good
pack verifies; whatever is changed, anywhere, is named by member and line or byte."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from authz_ledger.errors import NotFoundError, OutOfRangeError
from authz_ledger.evidence import pack
from authz_ledger.evidence.build import Built, build_pack
from authz_ledger.evidence.check import check_pack
from authz_ledger.record import entry
from authz_ledger.record.entry import DecisionRecord
from authz_ledger.tlog import cosignature
from authz_ledger.tlog.note import Verifier, generate_signer
from tests.support.readside import T0, Ledger, build_ledger

S = 1_000_000_000
WITNESS = cosignature.Cosigner.generate("witness.example/w1")


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    """300 entries one second apart; checkpoints at 40, 120, 300; the one at 120 cosigned by a witness."""
    led = build_ledger(tmp_path_factory.mktemp("evidence") / "data", [40, 120, 300])
    signed = led.store.checkpoint(120)
    assert signed is not None
    text = signed[1].split(b"\n\n")[0] + b"\n"
    cosigned = cosignature.add_cosignatures(signed[1], [led.signer.verifier()], [WITNESS.cosign(text, 1_800_000_000)])
    led.store.put_cosigned(120, cosigned)
    yield led
    led.close()


def keys(ledger: Ledger) -> list[Verifier]:
    return [ledger.signer.verifier()]


def window(first: int, end: int, flt: str = "") -> pack.Selection:
    return pack.Selection(T0 + first * S, T0 + end * S, flt)


@pytest.fixture(scope="module")
def built(ledger: Ledger) -> Built:
    return build_pack(ledger.store, keys(ledger), window(50, 110), witness_vkeys=[WITNESS.vkey()], created_ns=T0)


def members(archive: bytes) -> dict[str, bytes]:
    opened = pack.read_zip(archive)
    assert not opened.problems
    return opened.members


def findings(archive: bytes, ledger: Ledger, **kw: object) -> list[str]:
    return [str(f) for f in check_pack(archive, keys(ledger), **kw).findings]  # type: ignore[arg-type]


# --- A good pack ------------------------------------------------------------------------------------------


def test_a_pack_holds_the_window_proved_against_the_first_checkpoint_covering_it(built: Built, ledger: Ledger) -> None:
    verdict = check_pack(built.archive, keys(ledger), witnesses=[WITNESS.vkey()])
    assert verdict.ok, verdict.findings
    m = verdict.manifest
    assert m is not None and m.complete
    assert (m.first_index, m.end_index, verdict.entries) == (50, 110, 60)
    assert verdict.checkpoint is not None and verdict.checkpoint.checkpoint.size == 120
    assert verdict.latest is not None and verdict.latest.checkpoint.size == 300
    assert verdict.cosigned_by == [("witness.example/w1", 1_800_000_000, True)]
    lines = members(built.archive)[pack.ENTRIES].splitlines()
    docs = [json.loads(line) for line in lines]
    assert [d["index"] for d in docs] == list(range(50, 110))
    assert [d["decision_id"] for d in docs] == ledger.decision_ids[50:110]
    assert all(base64.b64decode(d["entry_b64"]) == ledger.store.entry(d["index"]) for d in docs)


def test_an_unpinned_witness_is_reported_as_checked_with_the_packs_own_key(built: Built, ledger: Ledger) -> None:
    verdict = check_pack(built.archive, keys(ledger))
    assert verdict.ok and verdict.cosigned_by == [("witness.example/w1", 1_800_000_000, False)]


def test_the_same_selection_gives_the_same_bytes(built: Built, ledger: Ledger) -> None:
    again = build_pack(ledger.store, keys(ledger), window(50, 110), witness_vkeys=[WITNESS.vkey()], created_ns=T0)
    assert again.archive == built.archive


def test_a_filtered_pack_holds_only_matching_entries_and_says_it_is_not_complete(ledger: Ledger) -> None:
    b = build_pack(ledger.store, keys(ledger), window(0, 200, "outcome:deny"))
    verdict = check_pack(b.archive, keys(ledger))
    assert verdict.ok, verdict.findings
    assert verdict.manifest is not None and not verdict.manifest.complete
    docs = [json.loads(line) for line in members(b.archive)[pack.ENTRIES].splitlines()]
    assert [d["index"] for d in docs] == [i for i in range(200) if i % 3 == 1]
    assert {d["outcome"] for d in docs} == {"deny"}
    assert b"A filter was applied" in members(b.archive)[pack.REPORT]


def test_the_latest_entries_get_the_latest_checkpoint_and_an_empty_consistency_proof(ledger: Ledger) -> None:
    b = build_pack(ledger.store, keys(ledger), window(250, 300))
    verdict = check_pack(b.archive, keys(ledger))
    assert verdict.ok and verdict.checkpoint is not None and verdict.checkpoint.checkpoint.size == 300
    assert members(b.archive)[pack.CONSISTENCY] == b""


@pytest.mark.parametrize(
    ("selection", "error", "message"),
    [
        pytest.param(window(400, 500), NotFoundError, "no decision", id="an empty window is refused"),
        pytest.param(
            window(0, 300, "user:nobody"), NotFoundError, "matches", id="a filter matching nothing is refused"
        ),
    ],
)
def test_a_pack_with_nothing_to_prove_is_refused(
    ledger: Ledger, selection: pack.Selection, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        build_pack(ledger.store, keys(ledger), selection)


def test_entries_no_checkpoint_covers_yet_are_refused(tmp_path: Path) -> None:
    led = build_ledger(tmp_path / "d", [10])
    led.append(5)
    try:
        with pytest.raises(OutOfRangeError, match="not covered by a signed checkpoint"):
            build_pack(led.store, keys(led), window(0, 20))
    finally:
        led.close()


# --- Whatever changes is named ----------------------------------------------------------------------------


def flip(member: str, at: float = 0.5) -> Callable[[dict[str, bytes]], None]:
    def change(m: dict[str, bytes]) -> None:
        data = bytearray(m[member])
        i = int(len(data) * at)
        data[i] ^= 0x01 if data[i] not in (0x0A, 0x0B) else 0x04
        m[member] = bytes(data)

    return change


def rewrite_entry(m: dict[str, bytes]) -> None:
    """Re-encode entry 61 (a deny) as an allow, with its line rebuilt to match: only the proof can tell."""
    lines = m[pack.ENTRIES].split(b"\n")
    doc = json.loads(lines[11])
    assert doc["outcome"] == "deny"
    msg = entry.decode(base64.b64decode(doc["entry_b64"]))
    msg.outcome, msg.allowed, msg.http_status = entry.OUTCOME_ALLOW, True, 200
    lines[11] = pack.entry_line(doc["index"], msg.SerializeToString())
    m[pack.ENTRIES] = b"\n".join(lines)


def drop_line(m: dict[str, bytes]) -> None:
    lines = m[pack.ENTRIES].split(b"\n")
    del lines[20]
    m[pack.ENTRIES] = b"\n".join(lines)


def edit_manifest(m: dict[str, bytes]) -> None:
    m[pack.MANIFEST] = m[pack.MANIFEST].replace(b'"latest_size": 300', b'"latest_size": 301')


def replace_node(m: dict[str, bytes]) -> None:
    lines = m[pack.NODES].split(b"\n")
    lo, hi, _ = lines[-2].split(b" ")
    lines[-2] = b" ".join((lo, hi, base64.b64encode(b"\x00" * 32)))
    m[pack.NODES] = b"\n".join(lines)


def foreign_checkpoint(m: dict[str, bytes]) -> None:
    text = m[pack.CHECKPOINT].split(b"\n\n")[0] + b"\n"
    from authz_ledger.tlog.note import sign_note

    m[pack.CHECKPOINT] = sign_note(text, [generate_signer("authz-ledger.test/log")])


CHANGES = [
    pytest.param(
        flip(pack.README),
        ["README.txt: differs from the README of this format at byte"],
        id="a changed byte of the README is named",
    ),
    pytest.param(
        flip(pack.CHECKPOINT, 0.2), ["checkpoint.txt: does not verify"], id="a changed byte of the checkpoint is named"
    ),
    pytest.param(
        flip(pack.CHECKPOINT, 0.95),
        ["checkpoint.txt: does not verify"],
        id="a changed byte of a checkpoint signature is named",
    ),
    pytest.param(
        foreign_checkpoint,
        ["checkpoint.txt: does not verify"],
        id="a checkpoint signed by another key of the same name is refused",
    ),
    pytest.param(
        flip(pack.LATEST, 0.3),
        ["latest-checkpoint.txt: does not verify"],
        id="a changed byte of the latest checkpoint is named",
    ),
    pytest.param(
        flip(pack.CONSISTENCY),
        ["consistency-proof.txt: does not prove"],
        id="a changed byte of the consistency proof is named",
    ),
    pytest.param(flip(pack.NODES, 0.9), ["proof-nodes.txt"], id="a changed byte of a proof hash is named"),
    pytest.param(replace_node, ["proof-nodes.txt"], id="a replaced proof hash is named"),
    pytest.param(
        flip(pack.ENTRIES, 0.5), ["entries.jsonl line 31"], id="a changed byte of an entry line is named by line"
    ),
    pytest.param(
        flip(pack.ENTRIES, 0.506), ["entries.jsonl line 31"], id="a changed byte of an entry's bytes is named by line"
    ),
    pytest.param(
        rewrite_entry,
        ["entries.jsonl line 12 (index 61): decision"],
        id="an entry rewritten with a matching line is named as changed",
    ),
    pytest.param(
        drop_line,
        ["entries.jsonl line 21 (index 71): entries 70 to 70 are missing"],
        id="an entry removed from a complete pack is named",
    ),
    pytest.param(flip(pack.VKEYS, 0.5), ["vkeys.txt line 1"], id="a changed byte of a verifier key is named"),
    pytest.param(
        flip(pack.REPORT, 0.7),
        ["report.html: differs from the report of the verified entries at byte"],
        id="a changed byte of the report is named",
    ),
    pytest.param(
        edit_manifest,
        ["manifest.json: differs from the manifest of the pack's members at byte"],
        id="a changed manifest is named",
    ),
]


@pytest.mark.parametrize(("change", "named"), CHANGES)
def test_a_change_anywhere_is_named(
    built: Built, ledger: Ledger, change: Callable[[dict[str, bytes]], None], named: list[str]
) -> None:
    m = members(built.archive)
    change(m)
    found = findings(pack.write_zip(m), ledger, witnesses=[WITNESS.vkey()])
    assert found, "the changed pack must not verify"
    for want in named:
        assert any(f.startswith(want) for f in found), found


@pytest.mark.parametrize("member", pack.MEMBERS)
def test_a_byte_damaged_in_the_archive_is_named_by_member(built: Built, ledger: Ledger, member: str) -> None:
    """Without the CRC-32 rewritten (damage in transit, a crude edit): unzip's own check names the member."""
    archive = bytearray(built.archive)
    header = archive.find(b"PK\x03\x04" + archive[4:8])  # the first local header's fixed part
    assert header == 0
    at = archive.find(member.encode()) + len(member) + 4
    archive[at] ^= 0x10
    found = findings(bytes(archive), ledger)
    assert any(f.startswith(member) for f in found), found


def test_a_pack_checked_with_another_logs_key_fails_on_both_checkpoints(built: Built) -> None:
    other = generate_signer("authz-ledger.test/log").verifier()
    found = [str(f) for f in check_pack(built.archive, [other]).findings]
    assert any(f.startswith("checkpoint.txt") for f in found) and any(
        f.startswith("latest-checkpoint.txt") for f in found
    )


def test_a_filtered_pack_whose_filter_was_edited_names_the_entries_it_no_longer_matches(ledger: Ledger) -> None:
    b = build_pack(ledger.store, keys(ledger), window(0, 60, "outcome:deny"))
    m = members(b.archive)
    m[pack.MANIFEST] = m[pack.MANIFEST].replace(b'"filter": "outcome:deny"', b'"filter": "outcome:allow"')
    found = findings(pack.write_zip(m), ledger)
    assert any("does not match the pack's selection" in f for f in found), found


def test_an_extra_member_is_named(built: Built, ledger: Ledger) -> None:
    import io
    import zipfile

    buf = io.BytesIO(built.archive)
    with zipfile.ZipFile(buf, "a") as z:
        z.writestr("extra.txt", b"hello")
    assert any(f.startswith("extra.txt") for f in findings(buf.getvalue(), ledger))


def test_a_pack_of_an_entry_that_is_not_a_ledger_entry_still_reads(tmp_path: Path) -> None:
    """An entry recorded from a malformed Check is still an entry: its line decodes and it is proved."""
    led = build_ledger(tmp_path / "d", [3])
    rec = DecisionRecord(time_unix_nano=T0 + 3 * S, decision_id="", input_json=b"", error="malformed request")
    from authz_ledger.ledger.queue import Pending

    led.writer._commit([Pending(rec.encode(), b"\x00" * 16, False)])
    led.checkpoint()
    try:
        b = build_pack(led.store, keys(led), window(0, 10))
        assert check_pack(b.archive, keys(led)).ok
    finally:
        led.close()
