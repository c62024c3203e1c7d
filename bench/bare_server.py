"""Baseline for bench_check.py: a bare grpcio allow-all ``envoy.service.auth.v3.Authorization/Check`` server.

Same ``grpc.server`` construction as authz-ledger (server.py): a 64-thread ThreadPoolExecutor and the same
channel options, but no health, no reflection, no input document, no policy and no ledger. Its answer is a bare
OK CheckResponse. Usage: ``python bench/bare_server.py 127.0.0.1:PORT`` (prints ``ready PORT`` when serving;
SIGTERM/SIGINT stop it). ``AUTHZ_BENCH_THREADS=FILE`` names its threads for per-thread CPU (``bench/_threads.py``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path
from types import FrameType

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import status_pb2

THREADS = 64  # authz-ledger's server.threads default
MAX_RECV = 4 * 1024 * 1024  # authz-ledger's server.max_recv_msg_size default


class AllowAll(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=0))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: bare_server.py HOST:PORT", file=sys.stderr)
        return 2
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="check"),
        options=[
            ("grpc.max_receive_message_length", MAX_RECV),
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.http2.max_pings_without_data", 0),
        ],
    )
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(AllowAll(), server)
    port = server.add_insecure_port(argv[1])
    if port == 0:
        print(f"cannot listen on {argv[1]}", file=sys.stderr)
        return 1
    server.start()
    if names := os.environ.get("AUTHZ_BENCH_THREADS"):  # see bench/_threads.py
        from _threads import name_threads

        name_threads(Path(names))
    print(f"ready {port}", flush=True)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stop.wait()
    server.stop(1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
