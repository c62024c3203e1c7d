"""Overload: 3x the measured maximum Check rate for 30 s against a real ``authz-ledger serve`` (sync ledger).

Usage (from the repository root): ``python bench/faults_overload.py [--seconds 30] [--factor 3]``

Load: h2load with bench_check.py's pre-serialised CheckRequest (bench/_workload.py), its helpers reused. Per
scenario (a fresh data directory each):

1. the maximum rate: closed loop, ``-c4 -m16`` (64 in flight, the server's thread count), ``--measure`` s;
2. the overload: ``--factor`` x that rate offered for ``--seconds`` s by 32 clients with 32 streams each
   (``--rps`` per client; up to 1024 Checks in flight). Every 0.5 s the server's RSS (VmRSS) is sampled;
3. recovery, without restart: right after the overload, normal Checks through grpcio; the time to the first
   allowed one and how many of the next 50 are allowed;
4. accounting, from the ledger and /metrics once the server has drained: every Check h2load got an answer for is
   either an entry or counted in a backpressure summary entry; the summary entries' counts equal the
   ``authz_ledger_refused_checks{reason="BackpressureError"}`` metric (each 503 deny is accounted for); the ledger
   verifies offline.

Scenarios: the defaults (``ledger.queue_size`` 8192, ``server.threads`` 64) and a small queue
(``ledger.queue_size=16``, ``ledger.enqueue_timeout_ms=2``) where the writer queue, not the thread pool, is the
narrowest point. The machine's load average is printed before each scenario: on a shared 2-core machine the
rates are the machine's, not the service's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grpc
from _workload import check_request, grpc_frame
from bench_check import (
    ALLOW_TRUE_REGO,
    REPO,
    ensure_tools,
    free_port,
    h2load,
    loadavg,
    stop_pid,
    wait_port,
)
from envoy.service.auth.v3 import external_auth_pb2_grpc

from authz_ledger.ledger.opening import LedgerPaths
from authz_ledger.ledger.store import Store
from authz_ledger.ledger.verify import verify_store
from authz_ledger.record import entry as ledger_entry
from authz_ledger.tlog import note

CLIENTS = 32
STREAMS = 32


@dataclass
class Figures:
    name: str
    load_before: str = ""
    max_rps: float = 0.0
    offered_rps: float = 0.0
    achieved_rps: float = 0.0
    answered: int = 0
    h2load_failed: int = 0
    entries: int = 0
    refused_in_summaries: int = 0
    summary_entries: int = 0
    refused_in_all_summaries: int = 0
    """Since the server started (the /metrics counter's span): warm-up and the max-rate run included."""
    refused_metric: dict[str, float] = field(default_factory=dict)
    errors_by_class: dict[str, int] = field(default_factory=dict)
    rss_mb: list[float] = field(default_factory=list)
    anon_mb: list[float] = field(default_factory=list)
    """RssAnon: the heap; RSS also counts the LMDB map's pages the process touched (RssFile), which grow with
    the ledger, not with the load."""
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    recovery_s: float = float("nan")
    recovered_of_50: int = 0
    recovery_sent: int = 0
    verified: int = 0
    problems: list[str] = field(default_factory=list)


def rss_mb(pid: int, field_name: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def sample_rss(pid: int, fig: Figures, stop: threading.Event) -> None:
    while not stop.wait(0.5):
        try:
            fig.rss_mb.append(rss_mb(pid))
            fig.anon_mb.append(rss_mb(pid, "RssAnon"))
        except OSError:
            return


def metrics(port: int) -> dict[str, float]:
    """``authz_ledger_refused_checks_total`` by reason."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("authz_ledger_refused_checks_total{"):
            reason = line.split('"')[1]
            out[reason] = float(line.rsplit(" ", 1)[1])
    return out


def recovery(port: int) -> tuple[float, int, int]:
    """(seconds to the first allowed Check, allowed of the next 50, Checks sent)."""
    sent = 0
    started = time.monotonic()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = external_auth_pb2_grpc.AuthorizationStub(ch)
        first = float("nan")
        while time.monotonic() - started < 30:
            sent += 1
            try:
                if stub.Check(check_request(), timeout=5).status.code == 0:
                    first = time.monotonic() - started
                    break
            except grpc.RpcError:
                pass
            time.sleep(0.01)
        ok = 0
        for _ in range(50):
            sent += 1
            with contextlib.suppress(grpc.RpcError):
                ok += stub.Check(check_request(), timeout=5).status.code == 0
    return first, ok, sent


def scenario(name: str, sets: list[str], args: argparse.Namespace, work: Path) -> Figures:
    fig = Figures(name, load_before=loadavg())
    data = work / f"data-{name}"
    policy = work / "policy"
    policy.mkdir(exist_ok=True)
    (policy / "policy.rego").write_text(ALLOW_TRUE_REGO)
    body = work / "check.bin"
    body.write_bytes(grpc_frame(check_request().SerializeToString()))
    port, mport = free_port(), free_port()
    cmd = [
        sys.executable, "-m", "authz_ledger.cli", "serve", "--addr", f"127.0.0.1:{port}",
        "--data-dir", str(data), "--policy", str(policy),
        "--set", "server.drain_seconds=0", "--set", "server.log_level=warning",
        "--set", f"metrics.addr=127.0.0.1:{mport}", "--set", "audit.enabled=false",
        "--set", "ledger.durability=sync",
    ]  # fmt: skip
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, PYTHONPATH=str(REPO / "server"))
    log = (work / f"{name}.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
    try:
        wait_port(port, proc)
        wait_port(mport, proc)
        # 1. maximum rate, closed loop
        h2load(port, body, work / "warm.log", ["-c4", "-m16", "-D", "3"])
        base = h2load(port, body, work / "max.log", ["-c4", "-m16", "-D", str(args.measure)])
        fig.max_rps = base.rps
        first = _size(data)
        # 2. overload
        fig.offered_rps = args.factor * base.rps
        per_client = max(1, round(fig.offered_rps / CLIENTS))
        stop = threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(proc.pid, fig, stop))
        fig.rss_mb.append(rss_mb(proc.pid))
        fig.anon_mb.append(rss_mb(proc.pid, "RssAnon"))
        sampler.start()
        try:
            run = h2load(
                port,
                body,
                work / "overload.log",
                [f"-c{CLIENTS}", f"-m{STREAMS}", "--rps", str(per_client), "-D", str(args.seconds)],
            )
        finally:
            stop.set()
            sampler.join()
        fig.achieved_rps, fig.answered, fig.h2load_failed = run.rps, run.succeeded, run.failed
        lat = run.latencies_us
        fig.p50_ms = lat[len(lat) // 2] / 1000 if lat else float("nan")
        fig.p99_ms = lat[int(len(lat) * 0.99)] / 1000 if lat else float("nan")
        fig.rss_mb.append(rss_mb(proc.pid))
        fig.anon_mb.append(rss_mb(proc.pid, "RssAnon"))
        # 3. recovery without restart
        fig.recovery_s, fig.recovered_of_50, fig.recovery_sent = recovery(port)
        time.sleep(1)  # the last refusal summary rides on the next batch: recovery's Checks made it
        fig.refused_metric = metrics(mport)
    finally:
        stop_pid(proc)
        log.close()
    _account(fig, data, first)
    return fig


def _size(data: Path) -> int:
    store = Store(LedgerPaths(data).store, readonly=True)
    try:
        return store.head().size
    finally:
        store.close()


def _account(fig: Figures, data: Path, first: int) -> None:
    paths = LedgerPaths(data)
    store = Store(paths.store, readonly=True)
    try:
        signer = note.Signer.from_private_key_string(paths.signing_key.read_text().strip())
        fig.verified = verify_store(store, [signer.verifier()]).size
        for seq, raw in store.iter_entries():
            e = ledger_entry.decode(raw, seq)
            if e.error.startswith("BackpressureError:") and e.result_json:
                refused = json.loads(e.result_json)["refused"]
                fig.refused_in_all_summaries += refused
                if seq >= first:
                    fig.summary_entries += 1
                    fig.refused_in_summaries += refused
            elif seq >= first:
                fig.entries += 1
                if e.error:
                    cls = e.error.split(":", 1)[0]
                    fig.errors_by_class[cls] = fig.errors_by_class.get(cls, 0) + 1
    finally:
        store.close()
    backpressure = int(fig.refused_metric.get("BackpressureError", 0))
    if backpressure != fig.refused_in_all_summaries:
        fig.problems.append(
            f"{backpressure} Checks denied by backpressure since the start but the summary entries count "
            f"{fig.refused_in_all_summaries}"
        )
    accounted = fig.entries - fig.recovery_sent + fig.refused_in_summaries
    if fig.answered > accounted:
        fig.problems.append(
            f"h2load got {fig.answered} answers but the ledger accounts for {accounted} "
            f"({fig.entries} entries - {fig.recovery_sent} recovery Checks + {fig.refused_in_summaries} refused)"
        )
    if fig.recovered_of_50 != 50:
        fig.problems.append(f"only {fig.recovered_of_50}/50 normal Checks allowed right after the overload")


def report(fig: Figures) -> None:
    rss, anon = fig.rss_mb, fig.anon_mb
    print(f"## {fig.name}  (load average before: {fig.load_before})")
    print(f"max rate (closed loop, 64 in flight): {fig.max_rps:.0f} Checks/s")
    print(
        f"overload: offered {fig.offered_rps:.0f}/s ({CLIENTS}x{STREAMS} streams), served {fig.achieved_rps:.0f}/s; "
        f"answered {fig.answered}, h2load failures {fig.h2load_failed}; "
        f"p50 {fig.p50_ms:.1f} ms, p99 {fig.p99_ms:.1f} ms"
    )
    print(
        f"server RSS MiB: start {rss[0]:.0f}, max {max(rss):.0f}, end {rss[-1]:.0f} "
        f"(samples every 0.5 s: {', '.join(f'{v:.0f}' for v in rss[:: max(1, len(rss) // 12)])})"
    )
    half = anon[len(anon) // 2 :]
    print(
        f"  of which RssAnon (heap) MiB: start {anon[0]:.0f}, max {max(anon):.0f}, end {anon[-1]:.0f}; "
        f"second half of the run: {min(half):.0f}..{max(half):.0f} "
        f"(samples: {', '.join(f'{v:.0f}' for v in anon[:: max(1, len(anon) // 12)])})"
    )
    print(
        f"ledger: {fig.entries} entries during the overload+recovery, {fig.summary_entries} backpressure summary "
        f"entries counting {fig.refused_in_summaries} denied Checks ({fig.refused_in_all_summaries} since the start); "
        f"/metrics refused since the start, by reason: {fig.refused_metric}; "
        f"errors recorded by class: {fig.errors_by_class or 'none'}"
    )
    print(
        f"recovery (no restart): first allowed Check after {fig.recovery_s * 1000:.0f} ms; "
        f"{fig.recovered_of_50}/50 allowed; ledger verifies: {fig.verified} entries"
    )
    print("problems: " + ("; ".join(fig.problems) if fig.problems else "none"), flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=30)
    p.add_argument("--factor", type=float, default=3)
    p.add_argument("--measure", type=int, default=10)
    p.add_argument("--keep", help="keep the work directory (logs, ledgers) here")
    p.add_argument("--only", choices=["defaults", "small-queue"])
    args = p.parse_args()
    ensure_tools()
    scenarios = {
        "defaults": [],
        "small-queue": ["ledger.queue_size=16", "ledger.enqueue_timeout_ms=2"],
    }
    bad = 0
    with tempfile.TemporaryDirectory(prefix="faults-overload-") as d:
        work = Path(args.keep) if args.keep else Path(d)
        work.mkdir(parents=True, exist_ok=True)
        for name, sets in scenarios.items():
            if args.only and name != args.only:
                continue
            fig = scenario(name, sets, args, work)
            report(fig)
            bad += bool(fig.problems)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
