"""Which Python server model should carry the Check path? grpcio's thread pool against grpc.aio, measured.

Usage (from the repository root): ``python bench/probe_server_models.py [--handler-us 70] [--quick]``
(needs the ``bench`` extra: ``pip install -e '.[bench]'`` for uvloop, httptools and aiohttp).

Each model is a minimal Check server whose handler burns ``--handler-us`` of thread CPU (authz-ledger's own
handler work: input document, result, ledger hand-off) and asks a real OPA (``allow := true``) over HTTP with
the workload's input document; the answer is a bare OK. Models:

* ``threads`` -- ``grpc.server`` with 64 threads (authz-ledger's server today) and a pycurl keep-alive pool
  (authz-ledger's OPA client);
* ``aio`` -- ``grpc.aio`` on uvloop, the OPA call on the same event loop through an asyncio protocol with
  httptools (llhttp) parsing the responses;
* ``aio-aiohttp`` -- the same with aiohttp's client instead.

Same harness as ``bench_check.py``: server alone on CPU 0, OPA and the load generators on CPU 1; a
saturating run (h2load, 64 Checks in flight) and a fixed-rate run (1000 req/s with Poisson arrivals,
``bench/poisson_load.js``). CPU per Check = the server process's utime+stime over the run / Checks answered.
These are prototypes to choose an architecture, not product code: they have no input document, ledger,
metrics or error handling.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "server"))
sys.path.insert(0, str(REPO / "bench"))

import grpc  # noqa: E402
from _workload import check_request, grpc_frame  # noqa: E402
from bench_check import (  # noqa: E402
    AUX_CPU,
    CLK_TCK,
    SERVER_CPU,
    free_port,
    h2load,
    opa_binary,
    pct,
    poisson_load,
    proc_cpu_ticks,
    stop_pid,
    wait_port,
)
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc  # noqa: E402
from google.rpc import status_pb2  # noqa: E402

from authz_ledger.check import input as input_document  # noqa: E402
from authz_ledger.check.handler import _compact_json  # noqa: E402

MODELS = ("threads", "aio", "aio-aiohttp")
OK = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=0))
DATA_PATH = "/v1/data/envoy/authz/allow?provenance=true"


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


# --- the servers (run in a child process: ``--serve MODEL PORT OPA_PORT HANDLER_US``) ---------------------


def serve_threads(port: int, opa_port: int, handler_s: float, body: bytes) -> None:
    import pycurl

    handles: queue.LifoQueue[Any] = queue.LifoQueue()

    def ask_opa() -> bytes:
        try:
            c = handles.get_nowait()
        except queue.Empty:
            c = pycurl.Curl()
            c.setopt(pycurl.URL, f"http://127.0.0.1:{opa_port}{DATA_PATH}")
            c.setopt(pycurl.HTTPHEADER, ["Content-Type: application/json", "Expect:"])
            c.setopt(pycurl.NOSIGNAL, 1)
        buf = io.BytesIO()
        c.setopt(pycurl.POSTFIELDS, body)
        c.setopt(pycurl.WRITEDATA, buf)
        c.perform()
        handles.put(c)
        return buf.getvalue()

    class Servicer(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
        def Check(self, request: Any, context: Any) -> Any:
            _burn(handler_s)
            json.loads(ask_opa())
            return OK

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64), options=[("grpc.so_reuseport", 0)])
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(Servicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(0)


class _OpaProtocol(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to OPA; one request at a time."""

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.chunks: list[bytes] = []
        self.answer: asyncio.Future[bytes] | None = None
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def on_message_complete(self) -> None:
        answer, self.answer = self.answer, None
        if answer is not None and not answer.done():  # done: the Check was cancelled (its caller went away)
            answer.set_result(b"".join(self.chunks))
        self.chunks = []

    def connection_lost(self, exc: Exception | None) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(ConnectionError("OPA closed the connection"))


async def serve_aio(port: int, opa_port: int, handler_s: float, body: bytes, client: str) -> None:
    loop = asyncio.get_running_loop()
    idle: list[_OpaProtocol] = []
    request = (
        f"POST {DATA_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{opa_port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    async def ask_opa() -> bytes:
        conn = idle.pop() if idle else (await loop.create_connection(_OpaProtocol, "127.0.0.1", opa_port))[1]
        conn.answer = loop.create_future()
        conn.transport.write(request)
        answer = await conn.answer
        idle.append(conn)
        return answer

    session: Any = None
    if client == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
    url = f"http://127.0.0.1:{opa_port}{DATA_PATH}"

    class Servicer(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
        async def Check(self, request: Any, context: Any) -> Any:
            _burn(handler_s)
            if session is None:
                json.loads(await ask_opa())
            else:
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                    json.loads(await r.read())
            return OK

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(Servicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)
    if session is not None:
        await session.close()


def serve(model: str, port: int, opa_port: int, handler_us: float) -> None:
    document = input_document.build_input(check_request())
    body = b'{"input":' + _compact_json(document) + b"}"
    if model == "threads":
        serve_threads(port, opa_port, handler_us / 1e6, body)
        return
    import uvloop

    uvloop.install()
    client = "aiohttp" if model == "aio-aiohttp" else "protocol"
    asyncio.run(serve_aio(port, opa_port, handler_us / 1e6, body, client))


# --- the measurement --------------------------------------------------------------------------------------


def measure(model: str, opa_port: int, handler_us: float, work: Path, quick: bool) -> str:
    port = free_port()
    cmd = [sys.executable, __file__, "--serve", model, str(port), str(opa_port), str(handler_us)]
    proc = subprocess.Popen(["taskset", "-c", str(SERVER_CPU), *cmd])
    body = work / "check.bin"
    body.write_bytes(grpc_frame(check_request().SerializeToString()))
    try:
        wait_port(port, proc)
        sat = ["-c4", "-m16"]
        h2load(port, body, work / "warm.log", [*sat, "-D", "1" if quick else "2"])
        before = proc_cpu_ticks(proc.pid)
        run = h2load(port, body, work / "sat.log", [*sat, "-D", "3" if quick else "8"])
        sat_cpu = (proc_cpu_ticks(proc.pid) - before) / CLK_TCK / max(run.succeeded, 1) * 1e6
        poisson_load(port, body, work / "warm.log", 1000, 1)
        before = proc_cpu_ticks(proc.pid)
        rate = poisson_load(port, body, work / "rate.log", 1000, 3 if quick else 10)
        rate_cpu = (proc_cpu_ticks(proc.pid) - before) / CLK_TCK / max(rate.succeeded, 1) * 1e6
    finally:
        stop_pid(proc)
    lat = rate.latencies_us
    return (
        f"| {model} | {run.rps:.0f} | {sat_cpu:.0f} | {rate.rps:.0f} | {rate_cpu:.0f} | "
        f"{pct(lat, 0.5) / 1000:.2f} | {pct(lat, 0.99) / 1000:.2f} | {pct(lat, 0.999) / 1000:.2f} | "
        f"{run.failed + rate.failed} |"
    )


def main() -> int:
    if len(sys.argv) == 6 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--handler-us", type=float, default=70, help="thread CPU each handler burns (default 70)")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    ap.add_argument("--quick", action="store_true", help="short runs")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="authz-models-"))
    policy = work / "allow.rego"
    policy.write_text("package envoy.authz\n\nimport rego.v1\n\nallow := true\n")
    opa_port = free_port()
    opa_cmd = [opa_binary(), "run", "--server", "--disable-telemetry", "--log-level", "error"]
    opa = subprocess.Popen(
        ["taskset", "-c", str(AUX_CPU), *opa_cmd, "--addr", f"127.0.0.1:{opa_port}", str(policy)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    print(f"# probe_server_models: handler {args.handler_us:g} µs CPU + OPA allow := true round trip")
    print()
    print(
        "| model | saturating req/s | CPU/Check µs | fixed-rate req/s | CPU/Check µs | p50 ms | p99 ms | p99.9 ms "
        "| failed |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    try:
        wait_port(opa_port, opa)
        for model in args.models.split(","):
            print(measure(model, opa_port, args.handler_us, work, args.quick), flush=True)
    finally:
        stop_pid(opa)
    return 0


if __name__ == "__main__":
    sys.exit(main())
