"""The hostile-input campaign: ≥ 100,000 generated CheckRequests through the real handler, engine and ledger.

Usage: ``python bench/faults_fuzz.py [--inputs 100000]`` from the repository root (needs ``server`` and the
repository root on PYTHONPATH, as tests/run.sh's venv provides). Prints inputs tried, ledger entries, decisions
lost (must be 0) and the time taken. The strategies are tests/hostile.py's; tests/test_fuzz.py runs a slice.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.faults.test_fuzz import run_campaign


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--inputs", type=int, default=100_000)
    args = ap.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        tried, entries = run_campaign(Path(tmp), args.inputs)
    elapsed = time.monotonic() - started
    print(f"inputs tried: {tried}; ledger entries: {entries}; decisions lost: {tried - entries}; "
          f"crashes: 0; time: {elapsed:.0f} s ({tried / elapsed:.0f} inputs/s)")  # fmt: skip
    return 0 if entries == tried and tried >= args.inputs else 1


if __name__ == "__main__":
    sys.exit(main())
