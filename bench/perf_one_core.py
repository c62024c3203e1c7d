"""Where one core's time goes per Check, by native code: Linux ``perf`` over the server's core while h2load
saturates it, for the bare grpcio server and the one-core scenarios of ``bench_check.py --one-core``.

Usage (from the repository root, as root or with ``kernel.perf_event_paranoid`` <= 1)::

    python bench/perf_one_core.py [--seconds 8] [--scenario bare|allow|example|stub]...

Everything of the service (the server and its evaluator processes) runs on CPU 0, h2load on CPU 1, as in
``bench_check.py --one-core``. ``perf record -a -C 0`` samples CPU 0 at 2 kHz for ``--seconds`` in the middle of
an h2load run; the samples are grouped by what ran (the server process, an evaluator, the kernel on their
behalf) and by the shared object that held the instruction pointer: the Python interpreter, grpcio's core,
protobuf's upb, libc, OPA's Go engine, the kernel. Each group is printed as µs of CPU 0 per Check answered in
the sampled window, so the rows of one scenario add up to its cost per Check and scenarios compare directly.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_check as bc

SCENARIOS = {
    "bare": bc.Scenario("bare", "bare", group="baseline"),
    "allow": bc.Scenario("default config, allow-all", "ledger", "embedded", "allow"),
    "example": bc.Scenario("default config, example policy", "ledger", "embedded", "example"),
    "stub": bc.Scenario("handler + ledger alone (stub)", "ledger", "stub", "example"),
}

PYTHON_DSO = Path(sysconfig.get_config_var("LIBDIR") or "", sysconfig.get_config_var("INSTSONAME") or "").name

DSO_GROUPS = (
    ("libpython", "Python interpreter"),
    ("cygrpc", "grpcio core"),
    ("_message", "protobuf (upb)"),
    ("libopabridge", "OPA's Go engine"),
    ("libc.so", "libc (malloc, memcpy, futex)"),
    ("liblmdb", "LMDB"),
    ("lmdb", "LMDB"),
    ("orjson", "orjson"),
    ("libcrypto", "OpenSSL (hashes)"),
    ("kernel", "kernel"),
)


def group_of(dso: str) -> str:
    for needle, name in DSO_GROUPS:
        if needle in dso:
            return name
    return "other"


def tasks(pid: int) -> set[int]:
    return {int(t.name) for t in Path(f"/proc/{pid}/task").glob("*") if t.name.isdigit()}


def top_symbols(data: Path, pid: int, dso: str, limit: int = 12) -> list[tuple[float, str]]:
    """The hottest symbols of one process inside one shared object (share of all samples, symbol)."""
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--stdio", "--no-children", "-g", "none", "--pid", str(pid),
         "--dsos", dso,
         "--sort", "sym", "-F", "overhead,sym", "--field-separator", "\t"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    rows: list[tuple[float, str]] = []
    for line in report.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        share, _, sym = line.partition("\t")
        rows.append((float(share.strip().rstrip("%")), sym.strip().removeprefix("[.] ").removeprefix("[k] ")))
    rows.sort(reverse=True)
    return rows[:limit]


def profile(bench: bc.Bench, sc: bc.Scenario, seconds: float, out: Path) -> tuple[int, dict[tuple[str, str], int], int]:
    """(Checks answered while perf sampled, samples by (process role, code group), the server's pid)."""
    st = bench.start(sc)
    try:
        bench.verify_answer(st.port, sc)
        streams = ["-c", str(bc.CONNECTIONS), "-m", str(bc.STREAMS)]
        bc.h2load(st.port, bench.body, bench.work / "warm.log", [*streams, "-D", "2"])
        answered: list[bc.LoadRun] = []
        load = threading.Thread(
            target=lambda: answered.append(
                bc.h2load(st.port, bench.body, bench.work / "run.log", [*streams, "-D", str(int(seconds) + 2)])
            )
        )
        load.start()
        time.sleep(1)
        record = ["perf", "record", "-q", "-F", "2000", "-a", "-C", str(bc.SERVER_CPU), "-o", str(out)]
        subprocess.run([*record, "--", "sleep", str(seconds)], check=True, capture_output=True)
        load.join()
        # perf names threads: every task of the server, and of each evaluator (Go runs its own threads).
        server_tids = tasks(st.server.pid)
        evaluator_tids = {tid for pid in bc.descendants(st.server.pid) for tid in tasks(pid)}
    finally:
        bench.stop(st)
    run = answered[0]
    # Checks answered during the sampled window: the run's rate times the window.
    checks = int(run.rps * seconds)
    report = subprocess.run(
        ["perf", "report", "-i", str(out), "--stdio", "--no-children", "-g", "none", "--sort", "pid,dso", "-F",
         "sample,pid,dso", "--field-separator", "\t"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    samples: dict[tuple[str, str], int] = collections.Counter()
    for line in report.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) < 3:
            continue
        count, who, dso = int(parts[0]), parts[1], parts[2]
        pid = int(who.split(":")[0]) if who.split(":")[0].isdigit() else -1
        role = "server" if pid in server_tids else "evaluators" if pid in evaluator_tids else "other"
        if pid == 0:
            role = "idle"
        samples[(role, group_of(dso))] += count
    return checks, samples, st.server.pid


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--seconds", default=8, type=int, help="sampling window per scenario, seconds (default 8)")
    ap.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="default: all four")
    args = ap.parse_args()
    if shutil.which("perf") is None:
        print("perf is needed (Debian: linux-perf)", file=sys.stderr)
        return 2
    bc.ONE_CORE = True
    bc.ensure_tools()
    os.sched_setaffinity(0, {bc.AUX_CPU})
    work = Path(tempfile.mkdtemp(prefix="authz-perf-"))
    bench = bc.Bench(bc.FULL, work, bc.opa_binary())
    names = args.scenario or ["bare", "stub", "allow", "example"]
    print(f"# perf_one_core: CPU {bc.SERVER_CPU} sampled at 2 kHz for {args.seconds:g} s per scenario; µs per Check")
    try:
        for name in names:
            sc = SCENARIOS[name]
            data = work / f"{name}.data"
            checks, samples, server_pid = profile(bench, sc, args.seconds, data)
            total = sum(samples.values()) or 1
            us_per_sample = args.seconds * 1e6 / total  # the window's CPU-0 time, split by sample
            busy = sum(n for (role, _), n in samples.items() if role != "idle")
            print(f"\n## {sc.name}: {checks / args.seconds:.0f} Checks/s, CPU 0 {busy / total:.0%} busy")
            print()
            print("| process | code | µs per Check | share |")
            print("|---|---|---:|---:|")
            for (role, group), n in sorted(samples.items(), key=lambda kv: -kv[1]):
                if role == "idle" or n / total < 0.005:
                    continue
                print(f"| {role} | {group} | {n * us_per_sample / max(checks, 1):.1f} | {n / total:.1%} |")
            print(f"| all | (busy) | {busy * us_per_sample / max(checks, 1):.1f} | {busy / total:.1%} |", flush=True)
            for dso in (PYTHON_DSO, "[kernel.kallsyms]"):
                top = top_symbols(data, server_pid, dso)
                print(f"\nthe server's hottest symbols in {dso}, µs per Check: ", end="")
                print(", ".join(f"{sym} {share / 100 * args.seconds * 1e6 / max(checks, 1):.1f}" for share, sym in top))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
