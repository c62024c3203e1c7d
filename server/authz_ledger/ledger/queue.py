"""The writer's input: decisions on their way into the ledger, and the bounded queue they wait in.

Handlers put :class:`Pending` entries on a :class:`BatchQueue`; the single writer thread takes everything queued
at once (group commit). :data:`STOP` and :data:`NUDGE` are sentinels the writer recognises by identity: they
carry no entry and never reach the ledger.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from authz_ledger.errors import LedgerError


class Pending:
    """One decision on its way into the ledger."""

    __slots__ = ("body", "decision_id", "done", "error", "seq", "taken")

    def __init__(self, body: bytes, decision_id: bytes, wait: bool) -> None:
        self.body = body
        self.decision_id = decision_id
        self.done: threading.Event | None = threading.Event() if wait else None
        self.seq = -1
        self.error: LedgerError | None = None
        self.taken = False
        """Set (under the queue's lock) when the writer takes it off the queue."""


STOP = Pending(b"", b"", wait=False)
"""Tells the writer to drain what is left and stop (LedgerWriter.close)."""
NUDGE = Pending(b"", b"", wait=False)
"""Wakes the writer for work that is not in the queue (a correction entry)."""


class BatchQueue:
    """A bounded FIFO whose consumer takes everything queued at once (group commit).

    ``queue.Queue`` costs a lock round trip per item on the consumer side; here the writer takes up to a whole
    batch under one lock acquisition, which matters at 100k+ entries/s in one Python thread.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[Pending] = deque()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)

    def put(self, item: Pending, timeout: float, *, force: bool = False) -> bool:
        """Append ``item``; wait at most ``timeout`` s for space. False if still full (``force`` never waits)."""
        with self._lock:
            if not force and len(self._items) >= self.maxsize:
                deadline = time.monotonic() + timeout
                while len(self._items) >= self.maxsize:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._not_full.wait(remaining)
            self._items.append(item)
            self._not_empty.notify()
            return True

    def take(self, max_items: int, timeout: float | None) -> list[Pending]:
        """Everything queued (at most ``max_items``); waits up to ``timeout`` for a first item."""
        with self._lock:
            if not self._items:
                self._not_empty.wait(timeout)
            items = self._items
            n = min(len(items), max_items)
            batch = [items.popleft() for _ in range(n)]
            for item in batch:
                item.taken = True
            if n:
                self._not_full.notify_all()
            return batch

    def replace_body(self, item: Pending, body: bytes) -> bool:
        """Give a still-queued ``item`` a new body; False if the writer has taken it already."""
        with self._lock:
            if item.taken:
                return False
            item.body = body
            return True

    def __len__(self) -> int:
        return len(self._items)
