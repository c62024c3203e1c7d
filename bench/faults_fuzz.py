"""The hostile-input campaign: ≥ 100,000 generated CheckRequests through the real handler, engine and ledger.

Usage: ``python bench/faults_fuzz.py [--inputs 100000] [--seed 6962]`` from the repository root. Prints inputs
tried, ledger entries, decisions lost (must be 0), crashes and answers without a status (both must be 0), and the
time taken; exits 1 otherwise.

The inputs come from a seeded generator (the seed and an input's number reproduce it): ``_workload``'s request,
shaped like Envoy's, given one to four absurd parts -- method, path, host, headers, a body in a content type it
may not be (JSON nested 50,000 deep, multipart, a form, bytes that are not UTF-8), lying body headers, a
principal -- and one in five then corrupted byte-wise into malformed protobuf. tests/faults/test_fuzz.py checks
the same property on 1,500 inputs from hypothesis strategies.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "server"))
sys.path.insert(0, str(REPO / "bench"))

import grpc  # noqa: E402
from _workload import check_request  # noqa: E402
from envoy.service.auth.v3 import external_auth_pb2  # noqa: E402
from envoy.service.auth.v3.attribute_context_pb2 import AttributeContext  # noqa: E402

from authz_ledger.check.arrival import parse_check_request  # noqa: E402
from authz_ledger.check.handler import CheckOptions, CheckService  # noqa: E402
from authz_ledger.config import EXAMPLE_POLICY  # noqa: E402
from authz_ledger.ledger.store import Store  # noqa: E402
from authz_ledger.ledger.writer import Durability, LedgerWriter, WriterOptions  # noqa: E402
from authz_ledger.policy.embedded import EmbeddedEngine  # noqa: E402
from authz_ledger.record.redact import RedactionRules, Redactor  # noqa: E402
from authz_ledger.tlog import note  # noqa: E402

ORIGIN = "bench.local/fuzz"
# Path and query syntax, escapes, controls, a NUL, non-ASCII letters and punctuation, an emoji (astral plane).
ALPHABET = "aZ09/?&=%#.;:,+-_~ \t\r\n\x00\x1b\x7f\"'\\[]{}<>\u00e9\u00df\u2014\u202e\uffff\U0001f600"
Http = AttributeContext.HttpRequest


def _text(rng: random.Random, longest: int) -> str:
    return "".join(rng.choices(ALPHABET, k=rng.randint(0, longest)))


def _json(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(7 if depth < 4 else 5)
    if kind < 5:
        return [None, rng.random() < 0.5, rng.randint(-(2**70), 2**70), rng.uniform(-1e308, 1e308), _text(rng, 20)][
            kind
        ]
    if kind == 5:
        return [_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {_text(rng, 8): _json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _body(rng: random.Random, http: Http) -> None:
    http.headers["content-type"] = rng.choice(
        ["application/json", "application/x-www-form-urlencoded", "multipart/form-data; boundary=b", "text/plain",
         "multipart/form-data", "application/grpc", "application/json; charset=latin1", ";=\x01", ""]
    )  # fmt: skip
    kind = rng.randrange(5)
    if kind == 0:
        depth = rng.randint(1, 50_000)
        http.body = "[" * depth + "]" * rng.randint(0, depth)
    elif kind == 1:
        http.body = json.dumps(_json(rng))
    elif kind == 2:
        name = _text(rng, 40)
        http.body = f'--b\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{_text(rng, 40)}\r\n--b--'
    elif kind == 3:
        http.body = "&".join(_text(rng, 10) for _ in range(rng.randint(0, 6)))
    else:
        http.raw_body = rng.randbytes(rng.randint(0, 300))


def _headers(rng: random.Random, http: Http) -> None:
    for _ in range(rng.randint(1, 40)):
        http.headers[_text(rng, 20).lower() or ":path"] = _text(rng, 60)


MUTATIONS: list[Callable[[random.Random, Http], None]] = [
    lambda rng, http: setattr(http, "method", rng.choice(["", "G\u00e9T", "CONNECT", "get", _text(rng, 12)])),
    lambda rng, http: setattr(
        http, "path", rng.choice(["", "?", "//x", "/%", "/%G0?a=%&&b", "/./../"]) + _text(rng, 99)
    ),
    lambda rng, http: setattr(http, "path", "/" + "seg/" * rng.randint(500, 3000)),
    lambda rng, http: setattr(http, "host", _text(rng, 40)),
    _headers,
    _body,
    lambda rng, http: http.headers.update({"content-length": rng.choice(["-7", "x", "1e3", "0", str(2**80)])}),
    lambda rng, http: http.headers.update({"x-envoy-auth-partial-body": rng.choice(["true", "TRUE", "1", ""])}),
]


def hostile_request(rng: random.Random) -> bytes:
    """One serialized CheckRequest, absurd but well-formed, or (one in five) not a CheckRequest at all."""
    req = check_request()
    http = req.attributes.request.http
    for mutate in rng.sample(MUTATIONS, rng.randint(1, 4)):
        mutate(rng, http)
    if rng.random() < 0.2:
        req.attributes.source.principal = _text(rng, 50)
    data = req.SerializeToString()
    if rng.random() < 0.2:
        pos = rng.randrange(len(data))
        data = data[:pos] + rng.randbytes(rng.randint(1, 4)) + data[pos + 1 :]
    return data


class Context:
    """The part of a gRPC servicer context the handler uses."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None

    def time_remaining(self) -> float:
        return 10.0

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        pass


def run_campaign(tmp: Path, inputs: int, seed: int) -> tuple[int, list[str], list[str]]:
    """Ledger entries written; the inputs that crashed the handler; those answered with neither a decision nor a
    gRPC error status."""
    store = Store(tmp / "ledger", map_size=1 << 30)
    signer = note.generate_signer(ORIGIN)
    writer = LedgerWriter(store, [signer], signer.name, WriterOptions(durability=Durability.SYNC))
    writer.start()
    engine = EmbeddedEngine(EXAMPLE_POLICY, workers=1, timeout=5.0)
    service = CheckService(engine, writer, Redactor(RedactionRules(), b"k" * 32), CheckOptions())
    rng = random.Random(seed)
    crashes: list[str] = []
    unanswered: list[str] = []
    try:
        for i in range(inputs):
            context = Context()
            try:
                response: external_auth_pb2.CheckResponse = service.Check(
                    parse_check_request(hostile_request(rng)),
                    context,  # type: ignore[arg-type]
                )
            except Exception as e:  # a crash: the handler must answer every input
                crashes.append(f"input {i}: {e!r}")
                continue
            if context.code is None and response.status.code not in (0, 7):
                unanswered.append(f"input {i}: status {response.status.code} and no gRPC error")
    finally:
        engine.close()
        writer.close()
    entries = store.head().size
    store.close()
    return entries, crashes, unanswered


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=6962)
    args = ap.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        entries, crashes, unanswered = run_campaign(Path(tmp), args.inputs, args.seed)
    elapsed = time.monotonic() - started
    print(f"inputs tried: {args.inputs} (seed {args.seed}); ledger entries: {entries}; "
          f"decisions lost: {args.inputs - entries}; crashes: {len(crashes)}; "
          f"answers without a status: {len(unanswered)}; "
          f"time: {elapsed:.0f} s ({args.inputs / elapsed:.0f} inputs/s)")  # fmt: skip
    for problem in (crashes + unanswered)[:20]:
        print(f"  PROBLEM: {problem}")
    return 0 if entries == args.inputs and not crashes and not unanswered else 1


if __name__ == "__main__":
    sys.exit(main())
