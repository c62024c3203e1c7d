"""Reload on change: polls the policy source's files and calls back once an edit has settled."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from authz_ledger.policy.bundle import MANIFEST_NAME

# The engine's logger, as before the package was split: its log lines keep the name operators filter on.
logger = logging.getLogger("authz_ledger.policy.embedded")


class Watcher:
    """Polls the policy source's files (path, size, mtime) and calls ``on_change`` once they settle."""

    def __init__(self, path: Path, interval: float, on_change: Callable[[], None]) -> None:
        self._path = path
        self._interval = interval
        self._on_change = on_change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="authz-ledger-policy-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(5.0)

    def _run(self) -> None:
        last = _fingerprint(self._path)
        while not self._stop.wait(self._interval):
            current = _fingerprint(self._path)
            if current == last:
                continue
            # Editors and `cp` write in steps: act once the files stopped changing for one interval.
            if self._stop.wait(self._interval):
                return
            settled = _fingerprint(self._path)
            if settled != current:
                continue
            last = settled
            try:
                self._on_change()
            except Exception:  # the watcher must outlive any surprise; reload() already logged PolicyErrors
                logger.exception("policy watcher: reload failed")


def _fingerprint(path: Path) -> tuple[tuple[str, int, int], ...]:
    entries: list[tuple[str, int, int]] = []
    try:
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # as bundle._read_directory
                for filename in sorted(filenames):
                    if filename.endswith(".rego") or filename.startswith("data.") or filename == MANIFEST_NAME:
                        st = (Path(dirpath) / filename).stat()
                        entries.append((os.path.join(dirpath, filename), st.st_size, st.st_mtime_ns))
        else:
            st = path.stat()
            entries.append((str(path), st.st_size, st.st_mtime_ns))
    except OSError:
        entries.append(("<unreadable>", 0, 0))
    return tuple(entries)
