"""kill -9 campaigns: under sync load, during key rotation, during checkpoint publishing, during export.

Usage (from the repository root)::

    python bench/faults_crash.py [--trials 50] [--only load|rotation|checkpoint|export]

1. **load** (``--trials``, default 50): tests/faults/test_crash.py's trial, many more times:
   ``authz-ledger serve`` in ``sync`` mode, 6 client threads, SIGKILL at a random moment 0.2-1.2 s in;
   after each kill every Check whose answer reached a client is in the ledger (by decision id) and the whole
   ledger verifies offline; the next trial's start re-verifies it.
2. **rotation** (``--trials // 3``): ``serve --key old --key new`` (the overlap of a key rotation), killed at a
   random moment 0-2.5 s after spawn -- during imports, start-up verification, the re-signing of the latest
   checkpoint with the new key, or serving under load. Each trial restarts with both keys; at the end the old
   key is retired (``--key new`` alone must start) and the ledger verifies with both vkeys.
3. **checkpoint** (``--trials // 3``): ``ledger.checkpoint_interval_ms=1``, so the writer publishes a
   checkpoint (LMDB transaction, then ``checkpoint`` file: write, fsync, rename, directory fsync) between nearly
   every pair of commits; killed at a random moment under load. After each kill: the ``checkpoint`` file is a
   complete signed note that verifies, its size is no larger than the ledger's, the restart passes the rollback
   check, no answered Check is missing.
4. **export** (``--trials // 3``): ``authz-ledger export --tiles`` (and ``--jsonl``) of a 60,000-entry ledger,
   killed at a random moment during the run; then the same export again into the same target, which must then
   hold, byte for byte, what an export that was never interrupted wrote (whose JSON Lines hold each entry once,
   in order, and whose checkpoint verifies; that the tiles follow C2SP tlog-tiles is what
   tests/readside/test_export_tiles.py checks, with a reader written from the spec alone).

Prints one line per trial and a summary line per campaign; exit 1 if anything was lost or did not verify.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "server"))
sys.path.insert(0, str(REPO / "bench"))

from _harness import (  # noqa: E402
    SERVE_ENV,
    SERVING,
    check_allowed,
    drive_load,
    free_port,
    spawn_serve,
    start_serve,
    stop_process,
)
from bench_export import DISTINCT_BODIES, build, entry_bodies  # noqa: E402

from authz_ledger import keys  # noqa: E402
from authz_ledger.ledger.opening import LedgerPaths  # noqa: E402
from authz_ledger.ledger.store import Store  # noqa: E402
from authz_ledger.ledger.verify import verify_store  # noqa: E402
from authz_ledger.tlog import checkpoint, note  # noqa: E402

ORIGIN = "authz-ledger.test/crash"


class Campaign:
    def __init__(self, name: str) -> None:
        self.name = name
        self.trials = 0
        self.answered = 0
        self.lost = 0
        self.problems: list[str] = []
        self.notes: dict[str, int] = {}

    def note(self, key: str, n: int = 1) -> None:
        self.notes[key] = self.notes.get(key, 0) + n

    def summary(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in sorted(self.notes.items()))
        return (
            f"# {self.name}: trials={self.trials} answered={self.answered} lost={self.lost} "
            f"problems={len(self.problems)} {extra}"
        )


def _check_ledger(data: Path, answered: list[str], vkeys: list[str], camp: Campaign, trial: int) -> int:
    store = Store(LedgerPaths(data).store, readonly=True)
    try:
        missing = [d for d in answered if store.seq_of_decision(uuid.UUID(d).bytes) is None]
        camp.lost += len(missing)
        if missing:
            camp.problems.append(f"trial {trial}: {len(missing)} answered decisions missing")
        try:
            return verify_store(store, [note.Verifier.from_vkey(v) for v in vkeys]).size
        except Exception as e:
            camp.problems.append(f"trial {trial}: verify failed: {e}")
            return -1
    finally:
        store.close()


def _vkey_of_data_dir(data: Path) -> str:
    return keys.load_signing_key(LedgerPaths(data).signing_key).verifier_key()


# --- 1. under load ------------------------------------------------------------------------------------------


def campaign_load(trials: int, work: Path, rng: random.Random) -> Campaign:
    camp = Campaign("kill -9 under sync load")
    data = work / "load"
    sets, log = ("ledger.durability=sync", "ledger.checkpoint_interval_ms=200"), work / "load.log"
    for trial in range(trials):
        port = free_port()
        proc = start_serve(data, port, *sets, log=log)
        answered: list[str] = []
        lock, stop = threading.Lock(), threading.Event()
        clients = drive_load(port, answered, lock, stop)
        time.sleep(rng.uniform(0.2, 1.2))  # the kill's random moment, under load
        stop_process(proc, signal.SIGKILL, timeout=10)
        stop.set()
        for c in clients:
            c.join(10)
        size = _check_ledger(data, answered, [_vkey_of_data_dir(data)], camp, trial)
        camp.trials += 1
        camp.answered += len(answered)
        print(f"load trial {trial}: answered {len(answered)}, ledger size {size}", flush=True)
    stop_process(start_serve(data, free_port(), *sets, log=log))  # the last restart re-verifies
    return camp


# --- 2. key rotation ----------------------------------------------------------------------------------------


def _spawn(data: Path, port: int, key_files: list[Path], *sets: str, log: Path) -> subprocess.Popen[str]:
    return spawn_serve(data, port, f"ledger.origin={ORIGIN}", "ledger.durability=sync", *sets, keys=key_files, log=log)


def _serve_until_killed(
    data: Path, key_files: list[Path], delay: float, log: Path, *sets: str
) -> tuple[list[str], bool, int | None]:
    """Spawn serve, drive load as soon as it listens, SIGKILL ``delay`` s after the spawn.

    Returns (answered decision ids, whether it was serving when killed, exit code if it exited by itself).
    """
    port = free_port()
    proc = _spawn(data, port, key_files, *sets, log=log)
    answered: list[str] = []
    lock, stop = threading.Lock(), threading.Event()
    serving = threading.Event()

    def wait_serving() -> None:
        line = proc.stdout.readline() if proc.stdout else ""
        if SERVING in line:
            serving.set()

    waiter = threading.Thread(target=wait_serving, daemon=True)
    waiter.start()
    clients: list[threading.Thread] = []
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        if serving.is_set() and not clients:
            clients = drive_load(port, answered, lock, stop)
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    was_serving = serving.is_set()
    code = proc.poll()
    if code is None:
        stop_process(proc, signal.SIGKILL, timeout=10)
    stop.set()
    for c in clients:
        c.join(10)
    return answered, was_serving, code


def _serve_cleanly(data: Path, key_files: list[Path], log: Path, *sets: str) -> str | None:
    """Start, one Check, SIGTERM; None if fine, else why not."""
    port = free_port()
    proc = _spawn(data, port, key_files, *sets, log=log)
    line = proc.stdout.readline() if proc.stdout else ""
    if SERVING not in line:
        proc.wait(30)
        return f"did not start: {log.read_text()[-500:]}"
    allowed = check_allowed(port)
    code = stop_process(proc)
    if not allowed:
        return "the Check after the restart was not allowed"
    return None if code == 0 else f"exit {code}"


def campaign_rotation(trials: int, work: Path, rng: random.Random) -> Campaign:
    camp = Campaign("kill -9 during key rotation (serve --key old --key new)")
    base = work / "rotation"
    base.mkdir()
    data, log = base / "data", base / "serve.log"
    old, new = base / "old.key", base / "new.key"
    old_vkey = keys.write_signing_key(old, ORIGIN).verifier_key()
    new_vkey = keys.write_signing_key(new, ORIGIN).verifier_key()
    vkeys = [old_vkey, new_vkey]
    # History under the old key alone, several checkpoints.
    for _ in range(2):
        answered, _, _ = _serve_until_killed(data, [old], 1.5, log)
        camp.answered += len(answered)
        _check_ledger(data, answered, [old_vkey], camp, -1)
    for trial in range(trials):
        delay = rng.uniform(0.0, 2.5)
        answered, was_serving, code = _serve_until_killed(data, [old, new], delay, log)
        if code is not None:
            camp.problems.append(f"trial {trial}: serve exited by itself with {code}: {log.read_text()[-400:]}")
        camp.trials += 1
        camp.answered += len(answered)
        camp.note("killed_while_serving" if was_serving else "killed_during_start")
        size = _check_ledger(data, answered, vkeys, camp, trial)
        print(
            f"rotation trial {trial}: killed {delay:.2f} s after spawn ({'serving' if was_serving else 'starting'}), "
            f"answered {len(answered)}, ledger size {size}",
            flush=True,
        )
    # Recovery: both keys once more (what an operator does after a crash during the overlap), then retire.
    for keys_now, what in (([old, new], "restart with both keys"), ([new], "restart with the new key alone")):
        problem = _serve_cleanly(data, keys_now, log)
        if problem:
            camp.problems.append(f"{what}: {problem}")
    store = Store(LedgerPaths(data).store, readonly=True)
    try:
        latest = store.checkpoint()
        assert latest is not None
        checkpoint.open_checkpoint(latest[1], [note.Verifier.from_vkey(new_vkey)])  # the new key signed it
        camp.note("final_size", latest[0])
    finally:
        store.close()
    _check_ledger(data, [], vkeys, camp, trials)
    return camp


# --- 3. checkpoint publishing -------------------------------------------------------------------------------


def campaign_checkpoint(trials: int, work: Path, rng: random.Random) -> Campaign:
    camp = Campaign("kill -9 during checkpoint publishing (checkpoint_interval_ms=1)")
    base = work / "checkpoint"
    base.mkdir()
    data, log = base / "data", base / "serve.log"
    key = base / "signing.key"
    vkey = keys.write_signing_key(key, ORIGIN).verifier_key()
    verifier = note.Verifier.from_vkey(vkey)
    for trial in range(trials):
        delay = rng.uniform(0.8, 2.5)
        answered, was_serving, code = _serve_until_killed(data, [key], delay, log, "ledger.checkpoint_interval_ms=1")
        if code is not None or not was_serving:
            camp.problems.append(f"trial {trial}: not serving when killed (exit {code}): {log.read_text()[-400:]}")
        camp.trials += 1
        camp.answered += len(answered)
        size = _check_ledger(data, answered, [vkey], camp, trial)
        cp_file = LedgerPaths(data).checkpoint
        try:
            cp, _ = checkpoint.open_checkpoint(cp_file.read_bytes(), [verifier])
            if cp.size > size:
                camp.problems.append(f"trial {trial}: checkpoint file size {cp.size} > ledger size {size}")
        except Exception as e:
            camp.problems.append(f"trial {trial}: the checkpoint file does not verify: {e}")
            cp = None
        leftovers = [p.name for p in data.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
        camp.note("tmp_file_left_behind", bool(leftovers))
        store = Store(LedgerPaths(data).store, readonly=True)
        try:
            camp.notes["checkpoints_stored"] = sum(1 for _ in store.iter_checkpoints())
        finally:
            store.close()
        print(
            f"checkpoint trial {trial}: killed at {delay:.2f} s, answered {len(answered)}, ledger size {size}, "
            f"checkpoint file size {cp.size if cp else '?'}",
            flush=True,
        )
    problem = _serve_cleanly(data, [key], log)  # the rollback check against the checkpoint file passes
    if problem:
        camp.problems.append(f"final restart: {problem}")
    return camp


# --- 4. export ----------------------------------------------------------------------------------------------


def _export(data: Path, target: list[str]) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "authz_ledger.cli", "export", "--data-dir", str(data), *target]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=SERVE_ENV)


def _timed_export(data: Path, target: list[str]) -> float:
    started = time.monotonic()
    proc = _export(data, target)
    _, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(err)
    return time.monotonic() - started


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (or ``root`` itself, a file) by its path below ``root``."""
    if root.is_file():
        return {"": root.read_bytes()}
    return {str(f.relative_to(root)): f.read_bytes() for f in root.rglob("*") if f.is_file()}


def _compare(got: dict[str, bytes], want: dict[str, bytes]) -> tuple[list[str], int]:
    """How an export differs from the uninterrupted one, and how many of its own temporary files (``.<name>.tmp``,
    not part of the log) a kill left behind."""
    leftovers = {name for name in set(got) - set(want) if Path(name).name.startswith(".")}
    differences = [f"{name or 'the file'} {'differs' if name in got else 'is missing'}" for name in sorted(want)
                   if got.get(name) != want[name]]  # fmt: skip
    return differences + [f"{name} is extra" for name in sorted(set(got) - set(want) - leftovers)], len(leftovers)


def _reference(data: Path, base: Path, vkey: str, size: int) -> dict[str, tuple[float, dict[str, bytes]]]:
    """Each kind's uninterrupted export: how long it took and its files, checked to hold the ledger."""
    out: dict[str, tuple[float, dict[str, bytes]]] = {}
    for kind in ("tiles", "jsonl"):
        target = base / f"reference-{kind}"
        out[kind] = _timed_export(data, [f"--{kind}", str(target)]), _files(target)
    cp, _ = checkpoint.open_checkpoint(out["tiles"][1]["checkpoint"], [note.Verifier.from_vkey(vkey)])
    lines = out["jsonl"][1][""].decode().splitlines()
    if cp.size != size or [json.loads(line)["index"] for line in lines] != list(range(size)):
        raise RuntimeError(f"the uninterrupted exports do not hold the {size} entries of the ledger")
    return out


def campaign_export(trials: int, work: Path, rng: random.Random) -> Campaign:
    camp = Campaign("kill -9 during export (--tiles and --jsonl), then export again")
    base = work / "export"
    base.mkdir()
    data = base / "data"
    signer = note.generate_signer(ORIGIN)
    LedgerPaths(data).keys.mkdir(parents=True)
    store = Store(LedgerPaths(data).store, map_size=1 << 30)
    build(store, signer, entry_bodies(DISTINCT_BODIES), 60_000)
    size = store.head().size
    store.close()
    reference = _reference(data, base, signer.verifier_key(), size)
    for kind, (seconds, _) in reference.items():
        camp.note(f"full_{kind}_export_ms", round(seconds * 1000))
    for trial in range(trials):
        for kind, (full, want) in reference.items():
            out = base / f"out-{trial}-{kind}"
            target = [f"--{kind}", str(out)]
            proc = _export(data, target)
            delay = rng.uniform(0.2, full)  # the first ~0.3 s is the interpreter starting
            time.sleep(delay)
            finished = proc.poll() is not None
            if not finished:
                proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            camp.note(f"{kind}_killed_mid_way", not finished)
            if kind == "tiles":
                partial = out.exists() and any(out.rglob("tile/*")) and not (out / "checkpoint").exists()
            else:
                partial = out.exists() and len(out.read_bytes().splitlines()) < size
            camp.note(f"{kind}_killed_with_partial_output", partial)
            again = _export(data, target)
            _, err = again.communicate(timeout=600)
            if again.returncode != 0:
                camp.problems.append(f"trial {trial} {kind}: the export after the kill failed: {err[-400:]}")
                continue
            differences, leftovers = _compare(_files(out), want)
            camp.note(f"{kind}_tmp_files_left_behind", leftovers)
            ok = not differences
            if differences:
                camp.problems.append(f"trial {trial} {kind}: not what an uninterrupted export wrote: {differences[:5]}")
            camp.trials += 1
            print(
                f"export trial {trial} {kind}: killed at {delay:.2f} s (mid-way: {not finished}), ok={ok}", flush=True
            )
            if kind == "tiles":
                shutil.rmtree(out, ignore_errors=True)
            else:
                out.unlink(missing_ok=True)
    return camp


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--only", choices=["load", "rotation", "checkpoint", "export"])
    p.add_argument("--seed", type=int, default=6962)
    args = p.parse_args()
    rng = random.Random(args.seed)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"# load average at start: {load}; seed {args.seed}", flush=True)
    campaigns = {
        "load": lambda w: campaign_load(args.trials, w, rng),
        "rotation": lambda w: campaign_rotation(max(args.trials // 3, 1), w, rng),
        "checkpoint": lambda w: campaign_checkpoint(max(args.trials // 3, 1), w, rng),
        "export": lambda w: campaign_export(max(args.trials // 3, 1), w, rng),
    }
    results = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="faults-crash-") as d:
        for name, run in campaigns.items():
            if args.only and name != args.only:
                continue
            camp = run(Path(d))
            results.append(camp)
            print(camp.summary(), flush=True)
            for problem in camp.problems:
                print(f"  PROBLEM: {problem}", flush=True)
    print(f"# total seconds {time.monotonic() - started:.0f}")
    return 1 if any(c.problems or c.lost for c in results) else 0


if __name__ == "__main__":
    sys.exit(main())
