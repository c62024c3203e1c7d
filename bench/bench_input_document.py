"""The cost of the policy input document: ``input_document.build_input`` plus its compact JSON, per request shape.

Usage (from the repository root): ``python bench/bench_input_document.py [--n 20000] [--repeat 5]``

Each shape is timed with ``time.thread_time_ns`` (CPU of this thread) over ``--n`` iterations, ``--repeat`` times;
the best repeat is printed in µs per document (the least disturbed by other load). Shapes:

- ``workload``: the GET of ``bench/_workload.py`` (13 headers, a query, no body): the benchmarks' Check;
- ``json body``: the same request as a POST with a 300-byte JSON body holding integers, decimals and strings;
- ``json numbers``: a JSON body of 100 decimals (the per-number cost);
- ``metadata``: the GET with ``metadata_context`` carrying a Struct of 10 numbers (Envoy's jwt_authn payload).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "server"))
sys.path.insert(0, str(REPO / "bench"))

from _workload import check_request  # noqa: E402

from authz_ledger.check import input as input_document  # noqa: E402
from authz_ledger.check.handler import _compact_json  # noqa: E402

JSON_BODY = json.dumps(
    {
        "order": {
            "id": 123456,
            "items": [{"sku": "A-1", "qty": 2, "price": 19.99}, {"sku": "B-7", "qty": 1, "price": 5.5}],
        },
        "customer": {"name": "Alice Example", "tier": "gold", "discount": 0.15, "since": 1700000000},
        "notes": "leave at the door, ring twice",
        "flags": [True, False, None],
    }
)
NUMBERS_BODY = json.dumps([i + 0.25 for i in range(100)])


def _post(body: str) -> object:
    req = check_request()
    http = req.attributes.request.http
    http.method = "POST"
    http.headers["content-type"] = "application/json"
    http.body = body
    http.size = len(body)
    return req


def _metadata() -> object:
    req = check_request()
    fields = req.attributes.metadata_context.filter_metadata["envoy.filters.http.jwt_authn"].fields
    for i in range(10):
        fields[f"n{i}"].number_value = i * 1000.5 + 1e-7
    return req


SHAPES: dict[str, Callable[[], object]] = {
    "workload": check_request,
    "json body": lambda: _post(JSON_BODY),
    "json numbers": lambda: _post(NUMBERS_BODY),
    "metadata": _metadata,
}


def per_call_us(fn: Callable[[], object], n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.thread_time_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.thread_time_ns() - start) / n / 1000)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"{'shape':<14} {'build_input µs':>15} {'+ JSON µs':>10} {'JSON bytes':>11}")
    for name, make in SHAPES.items():
        req = make()
        build = per_call_us(lambda req=req: input_document.build_input(req), args.n, args.repeat)
        both = per_call_us(lambda req=req: _compact_json(input_document.build_input(req)), args.n, args.repeat)
        size = len(_compact_json(input_document.build_input(req)))
        print(f"{name:<14} {build:>15.2f} {both:>10.2f} {size:>11}")


if __name__ == "__main__":
    main()
