"""Evidence packs on a large ledger: write one of ``--entries`` decisions, then verify it, as an auditor would.

Usage (from the repository root)::

    python bench/bench_evidence.py [--size 300000] [--entries 100000] [--keep DIR]

1. Builds (or, with ``--keep DIR``, reuses) a data directory of ``--size`` entries exactly as bench_console.py
   does (Envoy-shaped input documents of about 1 KB, times spread over 30 days, a checkpoint every 65,536).
2. Times ``authz-ledger evidence`` (as a library call, in this process) for the time window holding the
   ``--entries`` decisions before the newest tenth of the ledger, unfiltered: select, prove, render, zip and
   check (the command checks every pack it writes); then a filtered pack (``outcome:deny``) over the same window.
3. Times ``verify-evidence`` on each pack, and the console's check of a dropped pack (console/static/evidence.js,
   run by Node -- V8, WebCrypto and DecompressionStream as in Chromium -- timed inside Node, one core), and prints
   sizes and rates.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "server"))
sys.path.insert(0, str(REPO / "bench"))

from bench_console import ORIGIN, build  # noqa: E402

from authz_ledger import keys  # noqa: E402
from authz_ledger.evidence import pack  # noqa: E402
from authz_ledger.evidence.build import build_pack  # noqa: E402
from authz_ledger.evidence.check import check_pack  # noqa: E402
from authz_ledger.ledger.opening import LedgerPaths  # noqa: E402
from authz_ledger.ledger.store import Store  # noqa: E402
from authz_ledger.record import entry  # noqa: E402


def window(store: Store, size: int, entries: int) -> tuple[int, int]:
    """Times of entry ``size * 0.9 - entries`` and of entry ``size * 0.9``: a window of about ``entries``."""
    end = int(size * 0.9)
    first = max(end - entries, 0)
    since = entry.decode(store.entry(first) or b"").time_unix_nano
    until = entry.decode(store.entry(end) or b"").time_unix_nano
    return since, until


# Times checkEvidencePack on the pack at argv[1] with the key argv[2]; prints {"ok", "entries", "seconds"}.
CONSOLE_CHECK = """
import { readFileSync } from "node:fs";
import { checkEvidencePack } from "%s";
import { parseVerifierKey } from "%s";
const data = new Uint8Array(readFileSync(process.argv[1]));
const keys = [await parseVerifierKey(process.argv[2])];
const started = performance.now();
const v = await checkEvidencePack(data, keys);
const seconds = (performance.now() - started) / 1000;
console.log(JSON.stringify({ ok: v.ok, entries: v.entries, seconds, findings: v.findings.slice(0, 3) }));
"""


def console_check(archive: bytes, vkey: str, tmp: Path) -> tuple[float, int]:
    """Seconds the console's in-browser check takes on ``archive`` (evidence.js in Node, on CPU 0)."""
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node (>= 20) is needed to time the console's check")
    static = REPO / "server" / "authz_ledger" / "console" / "static"
    path = tmp / "pack.evidence.zip"
    path.write_bytes(archive)
    script = CONSOLE_CHECK % ((static / "evidence.js").as_uri(), (static / "verify.js").as_uri())
    argv = ["taskset", "-c", "0", node, "--input-type=module", "-e", script, str(path), vkey]
    done = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    assert done["ok"], done["findings"]
    return float(done["seconds"]), int(done["entries"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--size", type=int, default=300_000)
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--keep", type=Path, help="build the ledger here once and reuse it")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-evidence-") as tmp:
        data_dir = args.keep or Path(tmp) / "data"
        if not (LedgerPaths(data_dir).store / "data.mdb").exists():
            print(f"building a ledger of {args.size} entries ...", flush=True)
            print(f"built in {build(data_dir, args.size):.1f} s", flush=True)
        verifier = keys.load_signing_key(LedgerPaths(data_dir).signing_key).verifier()
        assert verifier.name == ORIGIN
        store = Store(LedgerPaths(data_dir).store, readonly=True)
        size = store.head().size
        since, until = window(store, size, args.entries)
        print("| pack | entries | write s | entries/s | archive MB | verify s | entries/s | console s | entries/s |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, flt in (("unfiltered", ""), ("outcome:deny", "outcome:deny")):
            started = time.perf_counter()
            built = build_pack(store, [verifier], pack.Selection(since, until, flt))
            wrote = time.perf_counter() - started
            started = time.perf_counter()
            verdict = check_pack(built.archive, [verifier])
            checked = time.perf_counter() - started
            assert verdict.ok, verdict.findings[:3]
            n = verdict.entries
            in_browser, seen = console_check(built.archive, verifier.vkey(), Path(tmp))
            assert seen == n
            print(
                f"| {name} | {n} | {wrote:.2f} | {n / wrote:,.0f} | {len(built.archive) / 1e6:.1f} | {checked:.2f} | "
                f"{n / checked:,.0f} | {in_browser:.2f} | {n / in_browser:,.0f} |",
                flush=True,
            )
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
