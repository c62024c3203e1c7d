"""Syscall faults (strace ``-e inject``) in the ledger writer: nothing acknowledged is lost, nothing is corrupted.

A handful of the injections ``bench/faults_syscalls.py`` sweeps (see its docstring for the driver, the harness
and what each run checks). Each run: seed a ledger, run the driver -- the ledger opened exactly as ``serve``
opens it, several threads recording decisions in ``sync`` mode and reporting each acknowledgement -- under
strace with one fault on the data directory's I/O, then restart on the same directory without faults and verify
the whole ledger offline. strace is installed when missing; a machine where it cannot trace fails the test.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("faults_syscalls", ROOT / "bench" / "faults_syscalls.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["faults_syscalls"] = module
    spec.loader.exec_module(module)
    return module


faults = _load_bench()


@pytest.fixture(scope="module", autouse=True)
def strace_works() -> None:
    try:
        faults._strace_can_inject(faults.ensure_strace())
    except (RuntimeError, OSError) as e:
        pytest.fail(f"strace fault injection is unavailable: {e}")


@pytest.mark.parametrize(
    ("syscall", "fault", "when"),
    [
        pytest.param("fdatasync", "eio", 2, id="fdatasync-EIO-once"),
        pytest.param("writev", "eio", 1, id="writev-EIO-once"),
        pytest.param("pwrite64", "eio-persistent", 6, id="pwrite64-EIO-from-call-6-on"),
        pytest.param("pwrite64", "sigkill", 7, id="pwrite64-SIGKILL"),
        pytest.param("fdatasync", "sigkill", 3, id="fdatasync-SIGKILL"),
        pytest.param("rename,renameat,renameat2", "eio", 1, id="checkpoint-rename-EIO-once"),
        pytest.param("openat", "eio", 2, id="checkpoint-openat-EIO-once"),
    ],
)
def test_an_injected_fault_loses_no_acknowledged_decision(tmp_path: Path, syscall: str, fault: str, when: int) -> None:
    o = faults.one_injection(tmp_path, syscall, fault, when)
    assert o.injected >= 1, f"the fault was never injected: {o.line()}"
    assert o.lost == 0, o.line()
    assert o.restart == "ok", o.line()
    # (the retry storm and the MDB_PANIC wedge are checked by their own tests below)
    problems = [p for p in o.problems if "without backoff" not in p and "until restarted" not in p]
    assert not problems, o.line()
    if syscall in faults.COMMIT_PATH and fault != "sigkill" and o.refused_checks == 0:
        # The fault hit the checkpoint's own transaction, not a batch of decisions (timing decides which comes
        # second): nothing to refuse, and the failure was reported.
        assert o.checkpoint_failures >= 1, o.line()
    elif syscall in faults.COMMIT_PATH and fault != "sigkill":
        # fail closed: the batch that hit the error was refused, with the error named
        assert "Input/output error" in o.first_refusal, o.line()
    elif fault != "sigkill":
        assert o.refused_checks == 0, f"a checkpoint-file fault must not refuse decisions: {o.line()}"


def test_one_failed_meta_page_write_does_not_wedge_the_ledger_until_restart(tmp_path: Path) -> None:
    """One EIO on LMDB's meta-page write (its pwrite64 of 120 bytes after the fdatasync) puts LMDB in MDB_PANIC.

    The disk is healthy again at once, yet every later decision is refused (fail closed, nothing lost) until the
    process is restarted. In a single-threaded run the meta write of the first commit is pwrite64 call 3 or 4.
    """
    hit_meta = False
    for when in (3, 4):
        o = faults.one_injection(tmp_path, "pwrite64", "eio", when, count=30, threads=1)
        assert o.injected == 1 and o.lost == 0, o.line()
        hit_meta = hit_meta or any(", 120, " in line for line in o.injected_lines)
        stuck = [p for p in o.problems if "until restarted" in p]
        assert not stuck, o.line()
    assert hit_meta, "neither run hit the meta-page write: the call numbers need adjusting"


def test_a_persistently_failing_disk_is_retried_with_backoff_not_in_a_busy_loop(tmp_path: Path) -> None:
    """While fdatasync keeps failing, the writer retries the checkpoint immediately, thousands of times a second.

    Each attempt is an LMDB write transaction plus one ERROR log line: a full core and a flood of logs for as long
    as the disk is broken (disk full included: the checkpoint file's fsync fails the same way).
    """
    o = faults.one_injection(tmp_path, "fdatasync", "eio-persistent", 3)
    assert o.lost == 0 and o.restart == "ok", o.line()
    assert o.injected <= faults.RETRY_STORM, o.line()
