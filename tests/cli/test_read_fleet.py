"""``authz-ledger list`` over a fleet: several shards (two data directories written by real ledgers, one served by
a real audit server), each signed by its own key, merged by decision time; every row verified against its own
shard's signed checkpoint, and a tampered entry or a wrong key an error that names the shard."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from authz_ledger.cli import main as cli
from authz_ledger.config import AuditConfig
from authz_ledger.ledger.store import Store, u64
from authz_ledger.readside.audit import start_audit_server
from authz_ledger.record import entry
from authz_ledger.tlog import note
from tests.support.readside import build_ledger

pytestmark = pytest.mark.timeout(120)

SECOND = 1_000_000_000
A, B, C = "replica-a.example/log", "replica-b.example/log", "replica-c.example/log"


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main(list(argv), out=out)
    return code, out.getvalue()


def rows(*argv: str) -> list[dict[str, object]]:
    code, out = run("list", *argv, "--json")
    assert code == 0, f"list {' '.join(argv)} exited {code}"
    return [json.loads(line) for line in out.splitlines()]


@dataclass
class Shard:
    origin: str
    where: list[str]
    vkey: str
    size: int
    """Entries in the shard."""
    signed: int
    """The latest signed checkpoint's size: entries from here on are not verified yet."""
    times: list[int]


@dataclass
class Fleet:
    shards: dict[str, Shard]

    @property
    def where(self) -> list[str]:
        return [arg for s in self.shards.values() for arg in s.where]

    @property
    def vkeys(self) -> list[str]:
        return [arg for s in self.shards.values() for arg in ("--vkey", s.vkey)]

    def expected(self) -> list[tuple[int, str, int]]:
        """(time, shard, index) of every entry, in the merged order: time, then shard, then index."""
        return sorted((t, s.origin, i) for s in self.shards.values() for i, t in enumerate(s.times))


def local_shard(data_dir: Path, origin: str, sizes: list[int], unsigned: int, shift_ns: int) -> Shard:
    """A closed data directory with checkpoints at ``sizes`` and ``unsigned`` entries after the last of them."""
    led = build_ledger(data_dir, sizes, origin=origin, shift_ns=shift_ns)
    led.append(unsigned)
    times = [entry.decode(raw).time_unix_nano for raw in led.raw_entries()]
    led.close()
    return Shard(origin, ["--data-dir", str(data_dir)], led.signer.verifier_key(), len(times), sizes[-1], times)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Three replicas whose decisions interleave in time: A at whole seconds (5 entries past its checkpoint),
    B half a second later, C (served by its audit API) a quarter second later."""
    tmp = tmp_path_factory.mktemp("fleet")
    a = local_shard(tmp / "a", A, [10, 30], 5, 0)
    b = local_shard(tmp / "b", B, [20], 0, SECOND // 2)
    led = build_ledger(tmp / "c", [15], origin=C, shift_ns=SECOND // 4)
    led.writer.start()
    server = start_audit_server(AuditConfig(addr="127.0.0.1:0"), led.store, led.writer)
    times = [entry.decode(raw).time_unix_nano for raw in led.raw_entries()]
    c = Shard(C, ["--server", f"127.0.0.1:{server.port}"], led.signer.verifier_key(), 15, 15, times)
    yield Fleet({A: a, B: b, C: c})
    server.stop(0)
    led.writer.close()
    led.close()


def key(doc: dict[str, object]) -> tuple[object, object, object]:
    return doc["time_unix_nano"], doc["shard"], doc["index"]


def test_several_shards_make_one_view_in_decision_time_order_each_row_verified_by_its_own_shard(fleet: Fleet) -> None:
    docs = rows(*fleet.where, *fleet.vkeys)
    assert [key(d) for d in docs] == fleet.expected()
    assert {d["shard"] for d in docs} == {A, B, C}
    for d in docs:
        shard = fleet.shards[str(d["shard"])]
        assert d["verified"] is (int(str(d["index"])) < shard.signed)
    # Every field of a single source's --json is still there, then the two the fleet adds.
    single = rows("--data-dir", str(fleet.shards[B].where[1]), "--limit", "1")[0]
    assert list(docs[0]) == [*single, "shard", "verified"]
    unverified = [(d["shard"], d["index"]) for d in docs if not d["verified"]]
    assert unverified == [(A, i) for i in range(30, 35)]


FILTERS = {
    "an outcome and a path prefix": (["--outcome", "deny", "--path-prefix", "/svc1/"], lambda i, t: i % 3 == 1),
    "a time range": (["--since", str(1_700_000_000 * SECOND + 5 * SECOND), "--until", "1700000009000000000"], None),
    "a principal": (["--principal", "spiffe://example/sa/client2"], lambda i, t: i % 4 == 2),
}


@pytest.mark.parametrize(("args", "want"), FILTERS.values(), ids=FILTERS.keys())
def test_filters_apply_to_every_shard(fleet: Fleet, args: list[str], want: object) -> None:
    docs = rows(*fleet.where, *fleet.vkeys, *args)
    if want is None:  # the time range: [T0 + 5 s, T0 + 9 s)
        expected = [k for k in fleet.expected() if 1_700_000_005 * SECOND <= k[0] < 1_700_000_009 * SECOND]
    else:
        expected = [k for k in fleet.expected() if want(k[2], k[0])]  # type: ignore[operator]
    assert expected and [key(d) for d in docs] == expected


def test_the_limit_counts_rows_of_the_merged_view(fleet: Fleet) -> None:
    docs = rows(*fleet.where, *fleet.vkeys, "--limit", "7")
    assert [key(d) for d in docs] == fleet.expected()[:7]
    assert {d["shard"] for d in docs} == {A, B, C}


def test_the_table_shows_the_shard_and_marks_rows_no_checkpoint_covers_yet(fleet: Fleet) -> None:
    code, out = run("list", *fleet.where, *fleet.vkeys)
    assert code == 0
    header, *lines = out.splitlines()
    assert header.split()[:4] == ["SHARD", "VERIFIED", "INDEX", "TIME"]
    assert len(lines) == sum(s.size for s in fleet.shards.values())
    marks = {(line.split()[0], int(line.split()[2])): line.split()[1] for line in lines}
    assert marks[A, 29] == "yes" and marks[A, 30] == "pending" and marks[C, 14] == "yes" and marks[B, 0] == "yes"


def test_one_source_with_a_vkey_is_verified_in_index_order(fleet: Fleet) -> None:
    b = fleet.shards[B]
    docs = rows(*b.where, "--vkey", b.vkey, "--from", "3", "--to", "9")
    assert [(d["shard"], d["index"], d["verified"]) for d in docs] == [(B, i, True) for i in range(3, 9)]


# --- failing closed ----------------------------------------------------------------------------------------


def flip_a_path_byte(data_dir: Path, index: int) -> None:
    """Change one letter of the entry's path in LMDB: the bytes still decode, but no longer hash to the leaf."""
    store = Store(data_dir / "ledger", map_size=64 << 20)
    try:
        with store.env.begin(write=True) as txn:
            body = bytearray(txn.get(u64(index), db=store.entries))
            at = body.find(b"/svc") + 1
            body[at] ^= 0x20  # "s" -> "S"
            txn.put(u64(index), bytes(body), db=store.entries)
    finally:
        store.close()


def test_a_tampered_entry_in_one_shard_is_an_error_naming_that_shard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = local_shard(tmp_path / "a", A, [12], 0, 0)
    b = local_shard(tmp_path / "b", B, [12], 0, SECOND // 2)
    flip_a_path_byte(tmp_path / "b", 7)
    code, out = run("list", *a.where, *b.where, "--vkey", a.vkey, "--vkey", b.vkey, "--json")
    assert code == 1
    err = capsys.readouterr().err
    assert f"shard {B!r} (--data-dir {tmp_path / 'b'}), entry 7:" in err
    # The rows before it in time were printed, verified; nothing of the changed entry was.
    printed = [json.loads(line) for line in out.splitlines()]
    assert printed and all(d["verified"] for d in printed)
    assert (B, 7) not in {(d["shard"], d["index"]) for d in printed}


def test_a_wrong_key_for_one_shard_is_an_error_naming_that_shard(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    impostor = note.generate_signer(B).verifier_key()  # named like B, but not B's key
    vkeys = ["--vkey", fleet.shards[A].vkey, "--vkey", impostor, "--vkey", fleet.shards[C].vkey]
    code, out = run("list", *fleet.where, *vkeys, "--json")
    assert code == 1 and out == ""
    err = capsys.readouterr().err
    assert f"shard {B!r}" in err and "does not verify with any given --vkey" in err


def test_a_key_of_another_shard_does_not_vouch_for_this_one(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run("list", *fleet.shards[A].where, *fleet.shards[B].where, "--vkey", fleet.shards[A].vkey)
    assert code == 1
    assert f"shard {B!r}" in capsys.readouterr().err


USAGE = {
    "several sources without a key": ([], "several sources need --vkey"),
    "an index range over several ledgers": (["--from", "3"], "--from and --to are indexes within one ledger"),
    "an end index over several ledgers": (["--to", "3"], "--from and --to are indexes within one ledger"),
}


@pytest.mark.parametrize(("args", "message"), USAGE.values(), ids=USAGE.keys())
def test_usage_errors_with_several_sources(
    fleet: Fleet, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    vkeys = fleet.vkeys if args else []
    assert run("list", *fleet.where, *vkeys, *args)[0] == 2
    assert message in capsys.readouterr().err


def test_one_shard_given_twice_is_refused(tmp_path: Path, fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    a = fleet.shards[A]
    assert run("list", *a.where, *a.where, "--vkey", a.vkey)[0] == 2
    assert f"{a.where[1]} is given twice" in capsys.readouterr().err
    shutil.copytree(a.where[1], tmp_path / "copy")  # a copy of a replica's directory is the same shard again
    assert run("list", *a.where, "--data-dir", str(tmp_path / "copy"), "--vkey", a.vkey)[0] == 2
    assert f"are the same shard {A!r}" in capsys.readouterr().err


def test_a_shard_without_a_signed_checkpoint_has_no_name_to_verify_against(
    tmp_path: Path, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    led = build_ledger(tmp_path / "new", [], origin="replica-new.example/log")
    led.append(3)
    led.close()
    a = fleet.shards[A]
    assert run("list", *a.where, "--data-dir", str(tmp_path / "new"), "--vkey", a.vkey)[0] == 1
    assert f"--data-dir {tmp_path / 'new'}: no signed checkpoint yet" in capsys.readouterr().err
