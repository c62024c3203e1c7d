"""A damaged data.mdb is a clear error naming the file, with exit code 3 -- never SIGBUS, SIGSEGV or SIGABRT.

LMDB maps the file and follows what it finds there, so each case runs the command in its own process: a signal
shows up as a negative return code instead of killing the test run. Damage is done to a copy of a stopped
service's data directory, as a failing disk or a careless restore would.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz_ledger.config import LedgerConfig
from authz_ledger.errors import LedgerFileError
from authz_ledger.ledger import integrity
from authz_ledger.ledger.opening import LedgerPaths, open_for_serving
from authz_ledger.ledger.queue import Pending
from tests.conftest import ORIGIN, ROOT
from tests.support.readside import Ledger, build_ledger, open_ledger, record

CLI = [sys.executable, "-m", "authz_ledger.cli"]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "server"), os.environ.get("PYTHONPATH", "")])}
EXIT_DAMAGED_FILE = 3


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *argv], capture_output=True, text=True, env=ENV, timeout=120, check=False)


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """(data dir, verifier key, root): 3,000 entries with checkpoints, some with bodies larger than a page."""
    led = build_ledger(tmp_path_factory.mktemp("healthy") / "data", [1000, 2000, 3000], batch=64)
    vkey = led.signer.verifier_key()
    led.close()
    data_dir = led.data_dir
    verified = run("verify", "--data-dir", str(data_dir), "--vkey", vkey, "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    return data_dir, vkey, json.loads(verified.stdout)["root"]


def _damaged_copy(healthy: Path, tmp_path: Path, damage: object) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(healthy, copy)
    data_file = LedgerPaths(copy).store / integrity.DATA_FILE
    assert callable(damage)
    damage(data_file)
    return copy


def _truncate_to(fraction: float) -> object:
    def damage(path: Path) -> None:
        size = path.stat().st_size
        os.truncate(path, int(size * fraction))

    return damage


def _page_size(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return integrity.read_meta(fd, path).page_size
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "fraction",
    [
        pytest.param(0.0, id="truncated to nothing"),
        pytest.param(0.0005, id="truncated inside the first meta page"),
        pytest.param(0.1, id="truncated to a tenth"),
        pytest.param(0.5, id="truncated to half"),
        pytest.param(0.9, id="truncated to nine tenths"),
        pytest.param(0.75, id="truncated to three quarters"),
    ],
)
@pytest.mark.parametrize("command", ["verify", "log", "serve"])
def test_a_truncated_data_file_is_a_clear_error_with_exit_code_3(
    healthy: tuple[Path, str, str], tmp_path: Path, fraction: float, command: str
) -> None:
    data_dir, vkey, _ = healthy
    copy = _damaged_copy(data_dir, tmp_path, _truncate_to(fraction))
    data_file = str(LedgerPaths(copy).store / integrity.DATA_FILE)
    if command == "verify":
        proc = run("verify", "--data-dir", str(copy), "--vkey", vkey, "--json")
        assert proc.returncode == EXIT_DAMAGED_FILE, proc.stdout + proc.stderr
        doc = json.loads(proc.stdout)
        assert (doc["ok"], doc["code"], doc["file"]) == (False, "ledger_file", data_file)
        message = doc["error"]
    elif command == "log":
        proc = run("log", "--data-dir", str(copy), "--json")
        assert proc.returncode == EXIT_DAMAGED_FILE, proc.stdout + proc.stderr
        message = proc.stderr
    else:
        with pytest.raises(LedgerFileError) as raised:
            open_for_serving(LedgerConfig(data_dir=str(copy), origin=ORIGIN, map_size_mb=64))
        message = str(raised.value)
    assert data_file in message
    assert "Restore the data directory" in message
    if fraction > 0.01:
        assert "truncated" in message or "past the end of the file" in message


@pytest.mark.parametrize("seed", range(24), ids=lambda s: f"random page {s} overwritten")
def test_a_page_overwritten_with_random_bytes_is_refused_or_changes_nothing(
    healthy: tuple[Path, str, str], tmp_path: Path, seed: int
) -> None:
    """Either verify refuses the file (exit 3: damaged; exit 1: an entry no longer verifies) or the page was not
    in use and the verified ledger is the same one; never a signal, never a different ledger called good."""
    data_dir, vkey, root = healthy
    rng = random.Random(seed)

    def overwrite(path: Path) -> None:
        size = _page_size(path)
        pages = path.stat().st_size // size
        page = rng.randrange(2, pages)
        with path.open("r+b") as f:
            f.seek(page * size)
            f.write(rng.randbytes(size))

    copy = _damaged_copy(data_dir, tmp_path, overwrite)
    proc = run("verify", "--data-dir", str(copy), "--vkey", vkey, "--json")
    assert proc.returncode in (0, 1, EXIT_DAMAGED_FILE), proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    if proc.returncode == 0:
        assert doc["root"] == root
    else:
        assert doc["ok"] is False and doc["code"] in ("ledger_file", "ledger_corrupt")


@pytest.mark.parametrize(
    "slots",
    [pytest.param((0,), id="the first meta page overwritten"), pytest.param((0, 1), id="both meta pages overwritten")],
)
def test_an_overwritten_meta_page_is_named(healthy: tuple[Path, str, str], tmp_path: Path, slots: tuple[int]) -> None:
    data_dir, vkey, _ = healthy

    def overwrite(path: Path) -> None:
        size = _page_size(path)
        with path.open("r+b") as f:
            for slot in slots:
                f.seek(slot * size)
                f.write(b"\xa5" * size)

    copy = _damaged_copy(data_dir, tmp_path, overwrite)
    proc = run("verify", "--data-dir", str(copy), "--vkey", vkey, "--json")
    assert proc.returncode == EXIT_DAMAGED_FILE, proc.stdout + proc.stderr
    assert "meta page 0" in json.loads(proc.stdout)["error"]


def test_check_structure_passes_a_ledger_while_its_writer_commits(tmp_path: Path) -> None:
    """Readers do not stop the writer: the walk reads one pinned snapshot, so commits meanwhile are no damage."""
    led = open_ledger(tmp_path / "data")
    led.append(200, batch=16)
    stop = threading.Event()

    def commit() -> None:
        while not stop.is_set():
            led.append(32, batch=8)

    thread = threading.Thread(target=commit)
    thread.start()
    try:
        for _ in range(30):
            integrity.check_structure(led.store.env, led.store.path)
            integrity.check_before_open(led.store.path)
    finally:
        stop.set()
        thread.join()
    assert len(led.decision_ids) > 200
    led.close()


@pytest.fixture
def big_values(tmp_path: Path) -> Iterator[Ledger]:
    led = open_ledger(tmp_path / "data")
    yield led
    led.close()


def test_values_larger_than_a_page_walk_cleanly(big_values: Ledger) -> None:
    """Overflow pages (a value over a page, as a large request body makes) are part of the walk."""
    small = record(0)
    big = dataclasses.replace(record(1), input_json=b'{"body":"' + b"x" * 40_000 + b'"}')
    big_values.writer._commit(
        [Pending(r.encode(), bytes.fromhex(r.decision_id.replace("-", "")), False) for r in (small, big)]
    )
    integrity.check_structure(big_values.store.env, big_values.store.path)
    integrity.check_before_open(big_values.store.path, full=True)


def test_serving_refuses_a_damaged_page_before_writing_anything(healthy: tuple[Path, str, str], tmp_path: Path) -> None:
    """The writer walks every page before its first write transaction: nothing is built on damage."""
    data_dir, _, _ = healthy
    rng = random.Random(7)

    def scramble_a_page_body(path: Path) -> None:
        size = _page_size(path)
        fd = os.open(path, os.O_RDONLY)
        try:
            meta = integrity.read_meta(fd, path)
        finally:
            os.close(fd)
        page = meta.main.root  # the main database's root: LMDB reads it at every open
        with path.open("r+b") as f:
            f.seek(page * size + 16)  # keep the page header, scramble the nodes
            f.write(rng.randbytes(size - 16))

    copy = _damaged_copy(data_dir, tmp_path, scramble_a_page_body)
    data_file = LedgerPaths(copy).store / integrity.DATA_FILE
    before = data_file.read_bytes()
    with pytest.raises(LedgerFileError):
        open_for_serving(LedgerConfig(data_dir=str(copy), origin=ORIGIN, map_size_mb=64))
    assert data_file.read_bytes() == before
