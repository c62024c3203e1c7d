"""A loopback TCP round trip between two CPUs, one byte each way, with the peer idle in between.

Usage: ``python bench/cross_cpu_rtt.py [--client-cpu 0] [--server-cpu 1] [--gap-ms 1] [--n 3000]``; prints one
JSON object (p50/p90/p99 in µs). On a VM a CPU that idles for a millisecond is halted, and waking it costs the
host's scheduling, so this is the latency every hop between processes on different CPUs pays at ~1000
requests/s. With ``--gap-ms 0`` the peer never idles: the round trip without wake-ups.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
import traceback


def echo(listener: socket.socket, cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := conn.recv(64):
        conn.sendall(data)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--client-cpu", type=int, default=0)
    ap.add_argument("--server-cpu", type=int, default=1)
    ap.add_argument("--gap-ms", type=float, default=1.0, help="pause between round trips (default 1 ms)")
    ap.add_argument("--n", type=int, default=3000)
    args = ap.parse_args()
    listener = socket.create_server(("127.0.0.1", 0))
    address = listener.getsockname()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            echo(listener, args.server_cpu)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    listener.close()
    rtts: list[float] = []
    try:
        os.sched_setaffinity(0, {args.client_cpu})
        with socket.create_connection(address) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(args.n):
                t0 = time.perf_counter_ns()
                conn.sendall(b"x")
                conn.recv(64)
                rtts.append((time.perf_counter_ns() - t0) / 1000)
                if args.gap_ms:
                    time.sleep(args.gap_ms / 1000)
    finally:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
    rtts.sort()
    out = {f"p{p}_us": round(rtts[min(len(rtts) - 1, int(p / 100 * len(rtts)))]) for p in (50, 90, 99)}
    print(json.dumps({"gap_ms": args.gap_ms, "n": args.n, **out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
