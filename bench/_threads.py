"""``AUTHZ_BENCH_THREADS=FILE`` for the benchmark servers: the Python name of every thread, by native id.

Python 3.11 does not name native threads, so per-thread CPU read from ``/proc/<pid>/task`` cannot otherwise tell
the Check pool from gRPC's serving thread or the ledger writer. Standard library only: the bare server imports it
without pulling authz-ledger into its heap.
"""

from __future__ import annotations

import atexit
import threading
import time
from pathlib import Path


def name_threads(out: Path) -> None:
    """Write ``native id<TAB>thread name`` of every Python thread seen to ``out`` at exit."""
    # Sampled while the server runs: at exit the pool's threads and the ledger writer have already been joined.
    seen: dict[int, str] = {}

    def sample() -> None:
        while True:
            seen.update((t.native_id, t.name) for t in threading.enumerate() if t.native_id)
            time.sleep(0.5)

    threading.Thread(target=sample, name="bench-thread-names", daemon=True).start()
    atexit.register(lambda: out.write_text("".join(f"{tid}\t{name}\n" for tid, name in seen.items())))
