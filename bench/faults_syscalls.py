"""Syscall fault injection into the ledger writer with strace: no acknowledged decision lost, nothing corrupted.

Usage (from the repository root)::

    python bench/faults_syscalls.py                 # the whole sweep (see SWEEP), prints one line per run
    python bench/faults_syscalls.py --quick         # a few call numbers per fault
    python bench/faults_syscalls.py driver ...      # the driver process itself (what strace runs)

The driver is the server minus gRPC: it opens the data directory exactly as ``authz-ledger serve`` does
(``ledger.open_for_serving``: keys, start-up re-verification, rollback check, the writer with ``sync``
durability) and has several client threads append decisions through ``LedgerWriter.record``. Each thread reports
every acknowledged decision (``record`` returned: durable) and every refusal over a unix socket -- ``sendto``,
never ``write``, so an injected ``write`` fault cannot touch the acknowledgement channel.

One run = seed the ledger (no faults), run the driver under ``strace -f -e inject=<syscall>:<fault>:when=<expr>``
restricted with ``-P`` to the ledger's files (the injection hits only I/O on the data directory), then restart
on the same directory without faults. It passes when:

* every acknowledged decision is in the ledger at the sequence number the driver was told (none lost, none moved);
* the restart's start-up re-verification passes and the full offline ``verify_store`` passes -- or the restart
  refuses cleanly with an error naming the problem (never silently);
* while an I/O fault on the commit path lasts, decisions are refused with a clear error and none is acknowledged
  (fail closed); a checkpoint-only fault never refuses a decision (its entries are durable) and is retried;
* with ``signal=SIGKILL`` the driver dies at that syscall; the restart must find every acknowledged decision.

Faults: ``error=EIO`` once (``when=N``), ``error=EIO`` from the N-th call on (``when=N+``: the disk stays broken
until the process exits), ``signal=SIGKILL`` at the N-th call.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "server"))

from authz_ledger import config  # noqa: E402
from authz_ledger.errors import AuthzLedgerError, LedgerError  # noqa: E402
from authz_ledger.ledger.opening import LedgerPaths, open_for_serving  # noqa: E402
from authz_ledger.ledger.store import Store  # noqa: E402
from authz_ledger.ledger.verify import verify_store  # noqa: E402
from authz_ledger.record.entry import OUTCOME_ALLOW, DecisionRecord  # noqa: E402
from authz_ledger.tlog import note  # noqa: E402

ORIGIN = "authz-ledger.test/faults"
FAULTS = ("eio", "eio-persistent", "sigkill")
# (syscall, what -P restricts it to, relative to the data directory)
TARGETS: dict[str, tuple[str, ...]] = {
    # LMDB writes dirty pages with pwrite64 and writev (runs of contiguous pages) on data.mdb, fdatasyncs it,
    # then writes the meta page with pwrite64 on a second, O_DSYNC descriptor of the same file.
    "pwrite64": ("ledger/data.mdb",),
    "writev": ("ledger/data.mdb",),
    "fdatasync": ("ledger/data.mdb",),
    # The checkpoint file: open the temporary, write, fsync, rename over ``checkpoint``, open and fsync the
    # directory (write_file_atomically).
    "write": (".checkpoint.tmp",),
    "fsync": (".checkpoint.tmp", "."),
    "openat": (".checkpoint.tmp", "."),
    "rename,renameat,renameat2": (".checkpoint.tmp",),
    # msync is used only with MDB_WRITEMAP, which the ledger does not set: injecting it must change nothing.
    "msync": ("ledger/data.mdb",),
}
IDLE_S = 1.0
"""After the clients stop, the driver leaves the writer alone with the fault this long."""
RETRY_STORM = 1000
"""More injected calls than this in one run (120 decisions, 20 probes, 1 s idle) means a retry loop without
backoff: a commit attempt makes at most a few calls of each kind."""
COMMIT_PATH = {"pwrite64", "writev", "fdatasync"}


# --- the driver (runs under strace) -------------------------------------------------------------------------


def _ledger_config(data_dir: Path, checkpoint_ms: int) -> config.LedgerConfig:
    cfg = config.load(
        sets=[
            "ledger.durability=sync",
            f"ledger.origin={ORIGIN}",
            f"ledger.checkpoint_interval_ms={checkpoint_ms}",
            "ledger.commit_timeout_ms=10000",
            "ledger.map_size_mb=16",
        ],
        environ={},
        overrides={"ledger.data_dir": str(data_dir)},
    )
    return cfg.ledger


def driver(args: argparse.Namespace) -> int:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(args.report)
    send_lock = threading.Lock()

    def report(line: str) -> None:
        with send_lock:
            sock.send(line.encode()[:4000])

    class CheckpointFailures(logging.Handler):
        """The writer's "cannot publish checkpoint" errors: a fault on the commit path may hit the checkpoint's
        own LMDB transaction rather than a batch of decisions, and then refusing no decision is right."""

        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("cannot publish checkpoint"):
                report(f"CHECKPOINT_FAILED {record.getMessage()}")

    logging.getLogger("authz_ledger.ledger.writer").addHandler(CheckpointFailures(logging.ERROR))

    try:
        opened = open_for_serving(_ledger_config(Path(args.data_dir), args.checkpoint_ms))
    except AuthzLedgerError as e:
        report(f"REFUSED {type(e).__name__}: {e}")
        return 3
    writer = opened.writer
    writer.start()
    report(f"READY {writer.head.size}")
    remaining = [args.count]
    lock = threading.Lock()
    deadline = time.monotonic() + args.seconds

    def client(t: int) -> None:
        while time.monotonic() < deadline:
            with lock:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            did = uuid.uuid4()
            record = DecisionRecord(
                time_unix_nano=time.time_ns(),
                decision_id=str(did),
                method="GET",
                path=f"/faults/{t}",
                engine="faults-driver",
                outcome=OUTCOME_ALLOW,
                allowed=True,
                http_status=200,
                input_json=b'{"attributes":{"request":{"http":{"path":"/faults"}}}}' + b" " * 200,
            )
            try:
                seq = writer.record(record.encode(), did.bytes)
            except LedgerError as e:
                report(f"FAIL {did.hex} {type(e).__name__}: {e}")
                time.sleep(0.01)
                continue
            report(f"ACK {did.hex} {seq}")

    threads = [threading.Thread(target=client, args=(t,)) for t in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(args.idle)  # the writer alone with the fault: does it retry calmly?
    # Once the clients are done: can the ledger take a decision again (a one-off I/O error is over by now)?
    last_error = ""
    for _ in range(args.probes):
        did = uuid.uuid4()
        record = DecisionRecord(time_unix_nano=time.time_ns(), decision_id=str(did), engine="faults-probe")
        try:
            seq = writer.record(record.encode(), did.bytes)
        except LedgerError as e:
            last_error = f"{type(e).__name__}: {e}"
            time.sleep(0.05)
            continue
        report(f"ACK {did.hex} {seq}")
        report("RECOVERED")
        break
    else:
        report(f"STUCK {last_error}")
    writer.close()
    report(f"CLOSED {writer.head.size} failure={writer.failure or ''}")
    opened.store.close()
    return 0


# --- the harness --------------------------------------------------------------------------------------------


@dataclass
class DriverRun:
    acks: dict[str, int] = field(default_factory=dict)
    fails: list[str] = field(default_factory=list)
    refused: str | None = None
    ready_size: int | None = None
    closed: str | None = None
    exit_code: int | None = None
    injected: int = 0
    """Lines strace marked ``(INJECTED)``."""
    injected_lines: list[str] = field(default_factory=list)
    acks_after_first_fail: int = 0
    recovered: bool | None = None
    stuck: str = ""
    checkpoint_failures: list[str] = field(default_factory=list)


def ensure_strace() -> str:
    """strace, installed from Debian when missing; raises (loudly) if that is impossible."""
    path = shutil.which("strace")
    if path:
        return path
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    if subprocess.run([*sudo, "apt-get", "install", "-y", "strace"], env=env, check=False).returncode != 0:
        subprocess.run([*sudo, "apt-get", "update"], env=env, check=True)
        subprocess.run([*sudo, "apt-get", "install", "-y", "strace"], env=env, check=True)
    path = shutil.which("strace")
    if not path:
        raise RuntimeError("strace is not installed and could not be installed")
    return path


def _strace_can_inject(strace: str) -> None:
    """Fail loudly when ptrace is not permitted here (containers without CAP_SYS_PTRACE)."""
    proc = subprocess.run(
        [strace, "-f", "-qq", "-e", "trace=getpid", "-e", "inject=getpid:error=EIO", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"strace cannot trace here: {proc.stderr.strip()}")


def run_driver(
    data_dir: Path,
    *,
    count: int,
    threads: int = 4,
    seconds: float = 60,
    checkpoint_ms: int = 50,
    idle: float = 0.0,
    strace: list[str] | None = None,
    timeout: float = 120,
    trace_copy: Path | None = None,
) -> DriverRun:
    """Run the driver (under ``strace`` argv when given); collect its reports until it exits."""
    run = DriverRun()
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
        sock_path = os.path.join(tmp, "report.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(sock_path)
        listener.listen(1)
        listener.settimeout(timeout)
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "driver",
            "--data-dir",
            str(data_dir),
            "--report",
            sock_path,
            "--count",
            str(count),
            "--threads",
            str(threads),
            "--seconds",
            str(seconds),
            "--checkpoint-ms",
            str(checkpoint_ms),
            "--idle",
            str(idle),
        ]
        trace_log = Path(tmp) / "strace.log"
        if strace is not None:
            argv = [*strace, "-o", str(trace_log), *argv]
        err_log = Path(tmp) / "stderr.log"
        with err_log.open("wb") as err:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        try:
            conn = _accept(listener, proc)
            if conn is not None:
                _collect(conn, run, time.monotonic() + timeout)
            run.exit_code = proc.wait(timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            listener.close()
        if trace_copy is not None and trace_log.exists():
            shutil.copy(trace_log, trace_copy)
        if strace is not None and trace_log.exists():
            text = trace_log.read_text(errors="replace")
            # an injected error is marked on its line; an injected SIGKILL ends the trace instead
            run.injected = text.count("(INJECTED)") + min(1, text.count("+++ killed by SIGKILL"))
            run.injected_lines = [line for line in text.splitlines() if "(INJECTED)" in line][:5]
        run.closed = run.closed or None
        if run.exit_code not in (0, 3, -9) and run.refused is None:
            sys.stderr.write(err_log.read_text(errors="replace")[-3000:])
    return run


def _accept(listener: socket.socket, proc: subprocess.Popen[bytes]) -> socket.socket | None:
    listener.settimeout(0.2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn, _ = listener.accept()
            return conn
        except TimeoutError:
            if proc.poll() is not None:
                return None
    return None


def _collect(conn: socket.socket, run: DriverRun, deadline: float) -> None:
    conn.settimeout(1)
    while time.monotonic() < deadline:
        try:
            msg = conn.recv(8192)
        except TimeoutError:
            continue
        if not msg:
            break
        kind, _, rest = msg.decode(errors="replace").partition(" ")
        if kind == "ACK":
            did, seq = rest.split()
            run.acks[did] = int(seq)
            if run.fails:
                run.acks_after_first_fail += 1
        elif kind == "FAIL":
            run.fails.append(rest)
        elif kind == "CHECKPOINT_FAILED":
            run.checkpoint_failures.append(rest)
        elif kind == "REFUSED":
            run.refused = rest
        elif kind == "READY":
            run.ready_size = int(rest)
        elif kind == "CLOSED":
            run.closed = rest
        elif kind == "RECOVERED":
            run.recovered = True
        elif kind == "STUCK":
            run.recovered, run.stuck = False, rest
    conn.close()


def strace_argv(strace: str, data_dir: Path, syscall: str, fault: str, when: int) -> list[str]:
    action = "signal=SIGKILL" if fault == "sigkill" else "error=EIO"
    expr = f"{when}+" if fault == "eio-persistent" else str(when)
    argv = [strace, "-f", "-qq", "-e", f"trace={syscall}", "-e", f"inject={syscall}:{action}:when={expr}"]
    for rel in TARGETS[syscall]:
        argv += ["-P", str(data_dir) if rel == "." else str(data_dir / rel)]
    return argv


@dataclass
class Outcome:
    syscall: str
    fault: str
    when: int
    injected: int
    acked: int
    refused_checks: int
    acks_after_first_fail: int
    restart: str
    size: int
    lost: int
    problems: list[str]
    injected_lines: list[str] = field(default_factory=list)
    first_refusal: str = ""
    last_refusal: str = ""
    checkpoint_failures: int = 0
    """The writer's failed checkpoint transactions (a commit-path fault can hit one instead of a batch)."""

    def line(self) -> str:
        status = "ok" if not self.problems else "PROBLEM: " + "; ".join(self.problems)
        if self.first_refusal:
            status += f"  [first refusal: {self.first_refusal[:160]}]"
        if self.last_refusal and self.last_refusal != self.first_refusal:
            status += f"  [last refusal: {self.last_refusal[:200]}]"
        return (
            f"{self.syscall:9} {self.fault:14} when={self.when:<4} injected={self.injected:<3} acked={self.acked:<4} "
            f"refused={self.refused_checks:<4} restart={self.restart:8} size={self.size:<5} lost={self.lost}  {status}"
        )


def one_injection(workdir: Path, syscall: str, fault: str, when: int, *, count: int = 120, threads: int = 4) -> Outcome:
    """Seed, inject, restart, verify; every check that fails is listed in ``problems``."""
    strace = ensure_strace()
    data = workdir / f"{syscall}-{fault}-{when}"
    shutil.rmtree(data, ignore_errors=True)
    problems: list[str] = []
    seed = run_driver(data, count=20, threads=min(threads, 2))
    if seed.exit_code != 0 or len(seed.acks) < 20 or seed.fails:
        raise RuntimeError(f"seeding the ledger failed: {seed}")
    acks = dict(seed.acks)
    faulty = run_driver(
        data, count=count, threads=threads, idle=IDLE_S, strace=strace_argv(strace, data, syscall, fault, when)
    )
    acks.update(faulty.acks)
    if faulty.refused is not None:
        problems.append(f"the faulty run refused to start: {faulty.refused}")
    if fault == "sigkill" and faulty.injected and faulty.exit_code not in (-9, 137):
        problems.append(f"SIGKILL injected but the driver exited with {faulty.exit_code}")
    if fault != "sigkill" and faulty.exit_code != 0:
        problems.append(f"the driver exited with {faulty.exit_code} under an I/O error (it must report, not crash)")
    if faulty.injected and fault != "sigkill" and syscall in COMMIT_PATH:
        if not faulty.fails and not faulty.checkpoint_failures:
            problems.append("an I/O error on the commit path refused no decision (and failed no checkpoint)")
        if fault == "eio-persistent" and faulty.recovered:
            problems.append("a decision was acknowledged while the disk kept failing")
    if faulty.injected > RETRY_STORM:
        problems.append(
            f"the writer hit the failing {syscall} {faulty.injected} times for {count} decisions "
            f"and {IDLE_S:g} s idle: retries without backoff"
        )
    if fault == "eio" and faulty.recovered is False:
        problems.append(f"after ONE failed {syscall} the ledger refuses every decision until restarted: {faulty.stuck}")
    if faulty.fails and syscall not in COMMIT_PATH and syscall != "msync":
        problems.append(f"a checkpoint-file fault refused {len(faulty.fails)} decisions: {faulty.fails[0]}")
    # Restart without faults, as the service would after the operator (or a supervisor) restarts it.
    again = run_driver(data, count=5, threads=1)
    if again.refused is not None:
        restart = "refused"
        if not any(word in again.refused for word in ("sequence", "checkpoint", "ledger", "entry")):
            problems.append(f"the restart refused without naming the problem: {again.refused}")
    elif again.exit_code == 0 and len(again.acks) >= 5 and not again.fails:
        restart = "ok"
        acks.update(again.acks)
    else:
        restart = "failed"
        problems.append(f"the restart neither served nor refused cleanly: exit {again.exit_code}, {again.fails[:1]}")
    size, lost = _check_ledger(data, acks, problems)
    refused_checks = len(faulty.fails)
    return Outcome(
        syscall,
        fault,
        when,
        faulty.injected,
        len(faulty.acks),
        refused_checks,
        faulty.acks_after_first_fail,
        restart,
        size,
        lost,
        problems,
        faulty.injected_lines,
        faulty.fails[0].split(" ", 1)[1] if faulty.fails else "",
        faulty.fails[-1].split(" ", 1)[1] if faulty.fails else "",
        len(faulty.checkpoint_failures),
    )


def _check_ledger(data: Path, acks: dict[str, int], problems: list[str]) -> tuple[int, int]:
    paths = LedgerPaths(data)
    store = Store(paths.store, readonly=True)
    try:
        signer = note.Signer.from_private_key_string(paths.signing_key.read_text().strip())
        try:
            size = verify_store(store, [signer.verifier()], origin=ORIGIN).size
        except LedgerError as e:
            problems.append(f"verify_store failed: {e}")
            size = store.head().size
        lost = 0
        for did, seq in acks.items():
            got = store.seq_of_decision(uuid.UUID(did).bytes)
            if got != seq:
                lost += 1
                if lost <= 3:
                    problems.append(f"acknowledged decision {did} (seq {seq}) is {'missing' if got is None else got}")
        return size, lost
    finally:
        store.close()


# --- the sweep ----------------------------------------------------------------------------------------------

SWEEP: dict[str, list[int]] = {
    # call numbers per writer thread; the seeded run shows ~2-4 calls per commit on data.mdb
    "pwrite64": [1, 2, 3, 4, 5, 7, 10, 15, 20, 30, 50, 80],
    "writev": [1, 2, 3, 5, 10, 20],
    "fdatasync": [1, 2, 3, 4, 5, 7, 10, 20, 40],
    "write": [1, 2, 3, 5],
    "fsync": [1, 2, 3, 4, 5, 8],
    "openat": [1, 2, 3, 4, 6],
    "rename,renameat,renameat2": [1, 2, 3],
    "msync": [1],
}
QUICK: dict[str, list[int]] = {
    "pwrite64": [1, 4, 20],
    "fdatasync": [1, 5],
    "fsync": [1, 2],
    "openat": [1, 2],
    "rename,renameat,renameat2": [1],
    "write": [1],
    "msync": [1],
}


def sweep(plan: dict[str, list[int]], workdir: Path) -> list[Outcome]:
    outcomes = []
    for syscall, calls in plan.items():
        for fault in FAULTS:
            for when in calls:
                o = one_injection(workdir, syscall, fault, when)
                print(o.line(), flush=True)
                outcomes.append(o)
    return outcomes


def _uptime() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "driver":
        p = argparse.ArgumentParser()
        p.add_argument("driver")
        p.add_argument("--data-dir", required=True)
        p.add_argument("--report", required=True)
        p.add_argument("--count", type=int, default=100)
        p.add_argument("--threads", type=int, default=4)
        p.add_argument("--seconds", type=float, default=60)
        p.add_argument("--checkpoint-ms", type=int, default=50)
        p.add_argument("--probes", type=int, default=20)
        p.add_argument("--idle", type=float, default=0.0)
        return driver(p.parse_args())
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", help="one syscall of the sweep")
    args = p.parse_args()
    strace = ensure_strace()
    _strace_can_inject(strace)
    plan = QUICK if args.quick else SWEEP
    if args.only:
        plan = {args.only: plan.get(args.only, SWEEP[args.only])}
    print(f"# strace fault injection into the ledger writer; load average {_uptime()}", flush=True)
    started = time.monotonic()
    with _workdir() as work:
        outcomes = sweep(plan, work)
    injected_runs = sum(1 for o in outcomes if o.injected)
    bad = [o for o in outcomes if o.problems]
    print(
        f"# runs={len(outcomes)} runs_with_a_fault_injected={injected_runs} "
        f"faults_injected={sum(o.injected for o in outcomes)} acknowledged={sum(o.acked for o in outcomes)} "
        f"refused={sum(o.refused_checks for o in outcomes)} "
        f"restarts_refused={sum(o.restart == 'refused' for o in outcomes)} "
        f"acknowledged_lost={sum(o.lost for o in outcomes)} runs_with_problems={len(bad)} "
        f"seconds={time.monotonic() - started:.0f}"
    )
    return 1 if bad else 0


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="faults-syscalls-") as d:
        yield Path(d)


if __name__ == "__main__":
    sys.exit(main())
