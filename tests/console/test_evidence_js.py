"""The console's check of a dropped evidence pack (console/static/evidence.js) agrees with ``verify-evidence``.

Packs are made by the project's Python code from a real ledger (tests/evidence/test_evidence.py's), changed the
ways that module changes them, and checked by evidence.js in Node (WebCrypto and DecompressionStream, as in a
browser), all in one process: a good pack verifies, and every change is named by the member Python names.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from typing import Any

import pytest

from authz_ledger.evidence import pack
from authz_ledger.evidence.build import Built, build_pack
from authz_ledger.evidence.check import check_pack
from authz_ledger.tlog.note import Verifier, generate_signer
from tests.conftest import ROOT
from tests.evidence.test_evidence import CHANGES, WITNESS, built, keys, ledger, members, window
from tests.support.readside import Ledger

__all__ = ["built", "ledger"]  # the fixtures, shared with tests/evidence/test_evidence.py

RUNNER = ROOT / "tests" / "console" / "evidence_js_cases.mjs"
Change = Callable[[dict[str, bytes]], None]


def damaged(archive: bytes, member: str) -> bytes:
    """One byte of ``member``'s deflated data changed, its CRC-32 left as it was (damage in transit)."""
    data = bytearray(archive)
    data[data.find(member.encode()) + len(member) + 4] ^= 0x10
    return bytes(data)


def with_extra_member(archive: bytes) -> bytes:
    buf = io.BytesIO(archive)
    with zipfile.ZipFile(buf, "a") as z:
        z.writestr("extra.txt", b"hello")
    return buf.getvalue()


def forged_cosignature(archive: bytes) -> bytes:
    """The witness's cosignature of checkpoint.txt changed, the manifest's digest of the member made to match."""
    m = members(archive)
    text, signatures = m[pack.CHECKPOINT].split(b"\n\n")
    lines = signatures.split(b"\n")
    (k,) = [i for i, line in enumerate(lines) if line.startswith("\u2014 witness.example/w1 ".encode())]
    sig = bytearray(base64.b64decode(lines[k].split(b" ")[2]))
    sig[-1] ^= 0x01
    lines[k] = b" ".join([*lines[k].split(b" ")[:2], base64.b64encode(bytes(sig))])
    m[pack.CHECKPOINT] = text + b"\n\n" + b"\n".join(lines)
    manifest = json.loads(m[pack.MANIFEST])
    manifest["sha256"][pack.CHECKPOINT] = pack.sha256_hex(m[pack.CHECKPOINT])
    m[pack.MANIFEST] = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()
    return pack.write_zip(m)


def named_member(want: str) -> str:
    """The member (and line) a finding of check.py names: its text up to the first colon."""
    return want.split(":", maxsplit=1)[0]


@pytest.fixture(scope="module")
def verdicts(built: Built, ledger: Ledger, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every case's verdict from evidence.js, keyed by case id, with the pack and Python's verdict beside it."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node (>= 20) is required to test the console's evidence.js and is not on PATH")
    log_key = ledger.signer.verifier_key()
    packs: dict[str, tuple[bytes, str]] = {"good": (built.archive, log_key)}
    filtered = build_pack(ledger.store, keys(ledger), window(0, 200, "outcome:deny"))
    packs["filtered"] = (filtered.archive, log_key)
    for param in CHANGES:
        change: Change = param.values[0]  # type: ignore[assignment]
        m = members(built.archive)
        change(m)
        packs[f"change: {param.id}"] = (pack.write_zip(m), log_key)
    for member in pack.MEMBERS:
        packs[f"damaged: {member}"] = (damaged(built.archive, member), log_key)
    packs["extra member"] = (with_extra_member(built.archive), log_key)
    packs["forged cosignature"] = (forged_cosignature(built.archive), log_key)
    packs["another log's key"] = (built.archive, generate_signer("authz-ledger.test/log").verifier_key())
    folder = tmp_path_factory.mktemp("packs")
    batch = []
    for k, (archive, vkey) in enumerate(packs.values()):
        path = folder / f"{k}.evidence.zip"
        path.write_bytes(archive)
        batch.append({"pack": str(path), "vkeys": [vkey]})
    proc = subprocess.run(
        [node, str(RUNNER)], input=json.dumps(batch), capture_output=True, text=True, timeout=300, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"{RUNNER.name} failed with exit code {proc.returncode}:\n{proc.stderr[-4000:]}")
    outcomes = json.loads(proc.stdout)
    return {
        name: {"js": outcome, "archive": archive, "vkey": vkey}
        for (name, (archive, vkey)), outcome in zip(packs.items(), outcomes, strict=True)
    }


def js_findings(case: dict[str, Any]) -> list[str]:
    js = case["js"]
    assert "error" not in js, js.get("error")
    return [f"{f['member']}{' ' + f['where'] if f['where'] else ''}: {f['message']}" for f in js["findings"]]


def test_a_good_pack_verifies_in_the_browser_and_says_what_it_left_to_verify_evidence(
    verdicts: dict[str, Any],
) -> None:
    js = verdicts["good"]["js"]
    assert js_findings(verdicts["good"]) == []
    assert js["ok"] and js["entries"] == 60
    assert js["cosignedBy"] == [{"witness": "witness.example/w1", "timestamp": 1_800_000_000}]
    assert any("report.html" in n and "not rebuilt" in n for n in js["notChecked"])


def test_a_filtered_pack_verifies_and_its_filter_is_listed_as_not_checked_here(verdicts: dict[str, Any]) -> None:
    js = verdicts["filtered"]["js"]
    assert js["ok"], js_findings(verdicts["filtered"])
    assert any("outcome:deny" in n for n in js["notChecked"])


@pytest.mark.parametrize(("change", "named"), [pytest.param(*p.values, id=p.id) for p in CHANGES])
def test_a_change_is_named_by_the_member_verify_evidence_names(
    verdicts: dict[str, Any], request: pytest.FixtureRequest, change: Change, named: list[str]
) -> None:
    case = verdicts[f"change: {request.node.callspec.id}"]
    found = js_findings(case)
    assert found, "the changed pack must not verify in the browser"
    for want in named:
        assert any(f.startswith(named_member(want)) for f in found), found


@pytest.mark.parametrize("member", pack.MEMBERS)
def test_a_byte_damaged_in_transit_is_named_by_member(verdicts: dict[str, Any], member: str) -> None:
    found = js_findings(verdicts[f"damaged: {member}"])
    assert any(f.startswith(f"{member}: cannot be read: ") for f in found), found


@pytest.mark.parametrize(
    "name",
    ["extra member", "another log's key"],
    ids=["an extra member is named", "a pack checked with another log's key fails on both checkpoints"],
)
def test_what_is_wrong_with_the_archive_or_the_key_is_named(verdicts: dict[str, Any], name: str) -> None:
    found = js_findings(verdicts[name])
    assert found
    if name == "extra member":
        assert any(f.startswith("extra.txt: is not part of an evidence pack") for f in found), found
    else:
        assert any(f.startswith("checkpoint.txt") for f in found) and any(
            f.startswith("latest-checkpoint.txt") for f in found
        ), found


def test_every_case_gets_the_same_verdict_in_the_browser_and_in_python(verdicts: dict[str, Any]) -> None:
    for name, case in verdicts.items():
        python = check_pack(case["archive"], [Verifier.from_vkey(case["vkey"])], witnesses=[WITNESS.vkey()])
        assert case["js"].get("ok") == python.ok, (name, js_findings(case), [str(f) for f in python.findings])


def test_a_forged_witness_cosignature_is_named_by_the_witness_key_it_no_longer_verifies_with(
    verdicts: dict[str, Any],
) -> None:
    found = js_findings(verdicts["forged cosignature"])
    assert found == ["vkeys.txt line 2: this key verifies no signature line of the pack's checkpoints"], found
    python = check_pack(verdicts["forged cosignature"]["archive"], [Verifier.from_vkey(verdicts["good"]["vkey"])])
    assert [str(f) for f in python.findings] == found  # verify-evidence, the witness not pinned, says the same
