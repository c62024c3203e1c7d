"""What every console request reads: the ledger (read-only), the console index, the verifier keys, and the
indexer thread that keeps the index a moment behind the ledger."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from authz_ledger.config import ConsoleConfig
from authz_ledger.console.index import ConsoleIndex
from authz_ledger.console.replay_runs import ReplayRuns, candidate_policies
from authz_ledger.errors import AuthzLedgerError, NotFoundError
from authz_ledger.ledger.store import Store, u64
from authz_ledger.readside.reader import LedgerReader
from authz_ledger.tlog import note

log = logging.getLogger(__name__)


def default_index_dir(ledger_dir: Path) -> Path:
    """One index per ledger directory, in the user's cache (it is derived data: deleting it costs a rebuild)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    digest = hashlib.sha256(str(ledger_dir.resolve()).encode()).hexdigest()[:16]
    return Path(base) / "authz-ledger" / "console" / digest


@dataclass
class ConsoleContext:
    store: Store
    index: ConsoleIndex
    verifiers: Sequence[note.Verifier]
    wait_for_size: Callable[[int, float], int] | None = None
    """The writer's notification when the console runs inside ``serve``; None: poll the store."""
    candidates: dict[str, Path] = field(default_factory=dict)
    """The candidate policies the replay page may evaluate, by name (``console.candidate_policies``)."""
    reader: LedgerReader = field(init=False)
    replays: ReplayRuns = field(init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    index_error: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self.reader = LedgerReader(self.store)
        self.replays = ReplayRuns(self.store, self.candidates)

    def entry_bytes(self, index: int) -> bytes:
        """The stored bytes of entry ``index`` exactly as hashed, whatever they hold (the browser checks them)."""
        with self.store.read_txn() as txn:
            raw = txn.get(u64(index), db=self.store.entries)
            if raw is None:
                size = self.store.head(txn).size
                raise NotFoundError(f"no entry {index}: the ledger holds {size} entries (0 .. {size - 1})")
            return bytes(raw)

    @property
    def vkeys(self) -> list[str]:
        return [v.vkey() for v in self.verifiers]

    def start_indexer(self, poll_seconds: float = 0.2) -> None:
        """Index what the ledger holds, then follow it (a daemon thread; :meth:`stop` ends it)."""
        self._thread = threading.Thread(target=self._follow, args=(poll_seconds,), name="console-indexer", daemon=True)
        self._thread.start()

    def _follow(self, poll_seconds: float) -> None:
        while not self._stop.is_set():
            try:
                covered = self.index.catch_up()
                self.index_error = ""
            except AuthzLedgerError as e:  # a damaged ledger or a full disk: pages still answer by scanning
                if not self.index_error:
                    log.error("console index stopped following the ledger: %s", e)
                self.index_error = str(e)
                self._stop.wait(5)
                continue
            if self.wait_for_size is not None:
                self.wait_for_size(covered, poll_seconds * 5)
            else:
                self._stop.wait(poll_seconds)

    def stop(self) -> None:
        self._stop.set()
        self.replays.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()


def open_context(
    ledger_dir: Path,
    verifiers: Sequence[note.Verifier],
    cfg: ConsoleConfig,
    *,
    store: Store | None = None,
    wait_for_size: Callable[[int, float], int] | None = None,
) -> ConsoleContext:
    """Open the ledger read-only (unless ``serve`` hands in its own store) and the console index ``cfg`` names."""
    candidates = candidate_policies(cfg.candidate_policies)  # before anything is opened: a bad path stops the start
    if store is None:
        store = Store(ledger_dir, readonly=True)
    index = ConsoleIndex(
        Path(cfg.index_dir) if cfg.index_dir else default_index_dir(ledger_dir),
        store,
        user_headers=cfg.user_headers,
        indexed_headers=cfg.index_headers,
    )
    return ConsoleContext(store, index, verifiers, wait_for_size, candidates)
