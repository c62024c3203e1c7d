"""Where authz-ledger's own CPU per Check goes: a per-step breakdown and a cProfile of the handler.

Usage (from the repository root): ``python bench/profile_check.py [--n 20000] [--cprofile 30]``

Everything runs in this process on one pinned CPU and is timed with ``time.thread_time_ns`` (CPU time of the
calling thread), so other load on the machine changes little. Steps, on the request of ``bench/_workload.py``:

- the protobuf decode / encode the bare grpcio server also pays (request parse, response serialise);
- each step of ``CheckService.Check``: ``_describe_request``, ``input_document.build_input``, the input JSON,
  redaction (+ the second JSON encode it causes), the result JSON, ``result.check_response``, the entry encode
  and ``LedgerWriter.record`` (async: the enqueue only; the writer thread is measured by bench_ledger.py);
- the engine's client side: ``OpaEngine.evaluate`` against a real OPA (this thread's CPU only: OPA's time and
  the wait are not CPU of this thread) and ``EmbeddedEngine.evaluate`` (the IPC to an evaluator process);
- the whole ``CheckService.Check`` with a zero-cost stub engine, and a cProfile of it (top functions).

The gRPC framework's own cost (HTTP/2, thread pool hand-offs) is not here: it is the bare server's CPU per
Check in bench_check.py, minus the request parse and response serialise measured here.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "server"))
sys.path.insert(0, str(REPO / "bench"))

from _workload import EXAMPLE_RESULT, StubEngine, check_request  # noqa: E402
from envoy.service.auth.v3 import external_auth_pb2  # noqa: E402
from google.rpc import status_pb2  # noqa: E402

from authz_ledger.check import input as input_document  # noqa: E402
from authz_ledger.check import result  # noqa: E402
from authz_ledger.check.handler import CheckOptions, CheckService, _compact_json, _describe_request  # noqa: E402
from authz_ledger.config import EXAMPLE_POLICY  # noqa: E402
from authz_ledger.ledger.store import Store  # noqa: E402
from authz_ledger.ledger.writer import Durability, LedgerWriter, WriterOptions  # noqa: E402
from authz_ledger.metrics import Metrics  # noqa: E402
from authz_ledger.record.ids import new_decision_id  # noqa: E402
from authz_ledger.record.redact import RedactionRules, Redactor  # noqa: E402
from authz_ledger.tlog import note  # noqa: E402


class FakeContext:
    def abort(self, code: Any, details: str) -> None:
        raise RuntimeError(details)

    def time_remaining(self) -> float:
        return 10.0  # a live caller (the handler checks the deadline first)


def cpu_us(fn: Callable[[], object], n: int) -> float:
    for _ in range(min(n // 10, 1000)):
        fn()
    t0 = time.thread_time_ns()
    for _ in range(n):
        fn()
    return (time.thread_time_ns() - t0) / n / 1000


class RawOpaClient:
    """What a minimal OPA client costs: one keep-alive HTTP/1.1 socket, pre-built request head, json.loads.

    A measuring stick for the suggestion in RESULTS.md, not a product client (no pool, timeouts or errors).
    """

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.head = f"POST {path} HTTP/1.1\r\nHost: opa\r\nContent-Type: application/json\r\n".encode()

    def evaluate(self, input_json: bytes) -> Any:
        body = b'{"input":' + input_json + b"}"
        self.sock.sendall(self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        buf = self.sock.recv(65536)
        head, _, rest = buf.partition(b"\r\n\r\n")
        i = head.lower().index(b"content-length: ") + 16
        j = head.find(b"\r\n", i)
        size = int(head[i : j if j > 0 else len(head)])
        while len(rest) < size:
            rest += self.sock.recv(65536)
        return json.loads(rest)["result"]


def wait_http(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("OPA did not start")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--n", type=int, default=20000, help="iterations per step")
    ap.add_argument("--cprofile", type=int, default=30, help="top functions to print from cProfile")
    args = ap.parse_args()
    n = args.n
    os.sched_setaffinity(0, {0})
    work = Path(tempfile.mkdtemp(prefix="authz-prof-"))
    req = check_request()
    raw = req.SerializeToString()
    redactor = Redactor(RedactionRules(), b"k" * 32)
    store = Store(work / "ledger")
    writer = LedgerWriter(
        store,
        [note.generate_signer("bench.local/prof")],
        "bench.local/prof",
        WriterOptions(durability=Durability.ASYNC, queue_size=10_000_000),
    )
    # Metrics on, as ``serve`` runs by default.
    service_ledger = CheckService(StubEngine(), writer, redactor, CheckOptions(), Metrics())
    service_noledger = CheckService(StubEngine(), None, redactor, CheckOptions(), Metrics())
    responses = result.ResponseCache(dry_run=False)
    result_json = _compact_json(EXAMPLE_RESULT)
    ctx: Any = FakeContext()  # only abort() is used, on policy errors
    document = input_document.build_input(req)
    input_json = _compact_json(document)
    redacted = redactor.redact_input(document)
    decision_id = "0190a5b2-7c4e-7d1a-8b3c-123456789abc"
    record = _describe_request(req, decision_id, redactor)
    record.input_json = _compact_json(redacted)
    record.result_json = _compact_json(EXAMPLE_RESULT)
    record.engine, record.decision_path, record.policy_version = "opa", "envoy/authz/allow", "opa/1.4.2"
    encoded = record.encode()
    outcome = result.check_response(EXAMPLE_RESULT, decision_id=decision_id, dry_run=False)
    bare_response = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=0))

    rows: list[tuple[str, float, str]] = []

    def step(name: str, fn: Callable[[], object], kind: str, iters: int = n) -> None:
        rows.append((name, cpu_us(fn, iters), kind))

    step("CheckRequest parse (FromString)", lambda: external_auth_pb2.CheckRequest.FromString(raw), "bare")
    step("bare CheckResponse serialise", bare_response.SerializeToString, "bare")
    step("_describe_request (entry fields, uuid str)", lambda: _describe_request(req, decision_id, redactor), "ledger")
    step("input_document.build_input", lambda: input_document.build_input(req), "check")
    step("input JSON (_compact_json)", lambda: _compact_json(document), "check")
    step("redact_input", lambda: redactor.redact_input(document), "ledger")
    step("redacted input JSON (2nd encode)", lambda: _compact_json(redacted), "ledger")
    step("result JSON (_compact_json)", lambda: _compact_json(EXAMPLE_RESULT), "ledger")
    step(
        "result.check_response",
        lambda: result.check_response(EXAMPLE_RESULT, decision_id=decision_id, dry_run=False),
        "check",
    )
    step(
        "result.ResponseCache hit (what the handler runs for a repeated result)",
        lambda: responses.check_response(EXAMPLE_RESULT, result_json, decision_id=decision_id),
        "check",
    )
    step("CheckResponse serialise (example result)", outcome.response.SerializeToString, "check")
    step("DecisionRecord.encode", record.encode, "ledger")
    step("LedgerWriter.record (async enqueue)", lambda: writer.record(encoded, b"0123456789abcdef"), "ledger")
    step("new_decision_id (UUIDv7)", new_decision_id, "check")
    step("whole Check, stub engine, no ledger (metrics on)", lambda: service_noledger.Check(req, ctx), "total")
    step("whole Check, stub engine, ledger async (metrics on)", lambda: service_ledger.Check(req, ctx), "total")

    opa_bin = subprocess.run(
        ["bash", str(REPO / "tests/tools/build-opa.sh")], check=True, capture_output=True, text=True
    ).stdout.split()[-1]
    opa_port = 18000 + os.getpid() % 1000
    policy_files = [str(EXAMPLE_POLICY / "policy.rego"), str(EXAMPLE_POLICY / "data.json")]
    opa = subprocess.Popen(
        ["taskset", "-c", "1", opa_bin, "run", "--server", "--disable-telemetry", "--log-level", "error",
         "--addr", f"127.0.0.1:{opa_port}", *policy_files],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_http(opa_port)
        from authz_ledger.policy.opa import OpaEngine

        with OpaEngine(f"http://127.0.0.1:{opa_port}", timeout=1.0) as engine:
            step("OpaEngine.evaluate (client side)", lambda: engine.evaluate(input_json), "engine", n // 4)
        raw_client = RawOpaClient(opa_port, "/v1/data/envoy/authz/allow?provenance=true&strict-builtin-errors=true")
        step(
            "minimal raw-socket OPA client (for comparison)", lambda: raw_client.evaluate(input_json), "engine", n // 4
        )
    finally:
        opa.terminate()
        opa.wait()
    from authz_ledger.policy.embedded import EmbeddedEngine

    with EmbeddedEngine(EXAMPLE_POLICY, workers=1, timeout=5.0) as emb:
        for pid in emb.worker_pids():
            os.sched_setaffinity(pid, {1})
        step("EmbeddedEngine.evaluate (client side)", lambda: emb.evaluate(input_json), "engine", n // 10)

    print(
        f"# profile_check n={n}, CPU 0, python {sys.version.split()[0]}; "
        f"input JSON {len(input_json)} B, entry {len(encoded)} B"
    )
    print()
    print("| step | kind | CPU µs |")
    print("|---|---|---:|")
    for name, us, kind in rows:
        print(f"| {name} | {kind} | {us:.1f} |")
    ledger = sum(us for _, us, kind in rows if kind == "ledger")
    print(f"\nledger-only handler steps: {ledger:.1f} µs per Check")

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n // 2):
        service_ledger.Check(req, ctx)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(args.cprofile)
    print(f"\n## cProfile: {n // 2} x CheckService.Check (stub engine, ledger async), by own time\n")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:8000])
    store.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
