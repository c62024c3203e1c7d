"""The parent's end of one evaluator process: requests written as Checks ask, replies read by one thread.

Many decisions can be in flight on one channel at once. A caller writes its request (under a short lock, so frames
never interleave) and sleeps on its own :class:`Slot`; the channel's reader thread reads whatever replies the worker
sent back -- one or many per ``recv`` -- and wakes each caller. The worker answers in request order.

When the worker's socket reaches EOF (it exited, was killed, or was retired), every decision still pending is
settled at once: the one the worker was evaluating (the shared state says which) gets :data:`DIED`, the others
:data:`RETRY` -- the worker never started them, so another worker may take them.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import os
import signal
import socket
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Final

from authz_ledger.policy.embedded.protocol import REPLY, REQUEST, STATE_EVALUATING, STATE_SINCE_NS

DIED: Final = b""
"""A slot's reply when the worker exited while evaluating that decision."""
RETRY: Final = b"\0"
"""A slot's reply when the worker exited before it started that decision: another worker may take it."""

_SEND_FLAGS = getattr(socket, "MSG_DONTWAIT", 0) | getattr(socket, "MSG_NOSIGNAL", 0)
try:
    # A ctypes.PyDLL call keeps the GIL. A send that only copies into the socket buffer takes microseconds;
    # releasing the GIL around it (as socket.send does) would hand it to a busy thread and cost a switch
    # interval to win it back.
    _libc_send: Any = ctypes.PyDLL(None, use_errno=True).send
    _libc_send.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
    _libc_send.restype = ctypes.c_ssize_t
except (OSError, AttributeError):  # pragma: no cover - not Linux/glibc: plain sendall
    _libc_send = None


class Slot:
    """Where one caller waits for its reply: ``done`` is released once ``reply`` is set."""

    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.done = threading.Lock()
        self.done.acquire()
        self.reply = RETRY


class Channel:
    """One evaluator process, its socket, the decisions pending on it and the thread that reads its replies."""

    def __init__(self, process: BaseProcess, conn: Connection, state: Any, on_exit: Callable[[Channel], None]) -> None:
        self.process = process
        self.conn = conn
        self.pid = process.pid or 0
        self.state = state
        self.killed_for_time = False
        self.closed = False  # takes no more requests: its worker exited or is being retired
        self._on_exit = on_exit
        self._sock = socket.socket(fileno=os.dup(conn.fileno()))
        self._sock.setblocking(True)
        self._fd = self._sock.fileno()
        self._send_lock = threading.Lock()
        self._pending: dict[int, Slot] = {}
        self._ids = itertools.count(1)
        self._reader = threading.Thread(target=self._read, name="authz-ledger-rego-reader", daemon=True)

    def start(self) -> None:
        """Start reading replies (after the worker said it is ready)."""
        self._reader.start()

    def load(self) -> int:
        """Decisions pending on this channel (for choosing the least busy one)."""
        return len(self._pending)

    def submit(self, input_json: bytes, deadline_ns: int, slot: Slot) -> int | None:
        """Send one decision; its request id, or None if this channel takes no more (try another one)."""
        with self._send_lock:
            if self.closed:
                return None
            rid = next(self._ids)
            frame = REQUEST.pack(len(input_json), rid, deadline_ns) + input_json
            self._pending[rid] = slot
            try:
                self._send(frame)
            except OSError:
                self.closed = True
                # Settled by the reader already (RETRY), or ours to give back: the worker never saw it.
                return None if self._pending.pop(rid, None) is not None else rid
        return rid

    def abandon(self, rid: int) -> bool:
        """The caller stops waiting for ``rid``. False if its reply was settled meanwhile (then it is in the slot)."""
        return self._pending.pop(rid, None) is not None

    def evaluating(self) -> tuple[int, int]:
        """(request id, monotonic ns when its evaluation started) the worker is on; ``(_, 0)`` while idle."""
        since = int(self.state[STATE_SINCE_NS])
        return int(self.state[STATE_EVALUATING]), since

    def kill_for_time(self, rid: int | None = None) -> None:
        """End the worker because an evaluation outlived its timeout (if ``rid`` is given: only if it is on that)."""
        evaluating, since = self.evaluating()
        if rid is not None and (evaluating != rid or not since):
            return
        self.killed_for_time = True
        self.kill()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def finish(self) -> None:
        """Retire gracefully: the worker answers what it was sent, sees EOF and exits."""
        with self._send_lock:
            self.closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)

    def exitcode(self) -> int | None:
        self.process.join(0.2)
        return self.process.exitcode

    def reap(self) -> None:
        """Wait for the process (kill it if it lingers) and close the sockets. Called once it reached EOF."""
        self.process.join(2.0)
        if self.process.is_alive():
            self.kill()
            self.process.join(2.0)
        self._sock.close()
        self.conn.close()

    def _send(self, frame: bytes) -> None:
        sent = 0
        if _libc_send is not None:
            sent = _libc_send(self._fd, frame, len(frame), _SEND_FLAGS)
            if sent == len(frame):
                return
            if sent < 0:
                err = ctypes.get_errno()
                if err not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    raise OSError(err, os.strerror(err))
                sent = 0
        self._sock.sendall(frame[sent:])  # the socket buffer is full (a large input, or a slow worker)

    def _read(self) -> None:
        buf = bytearray()
        header = REPLY.size
        pending = self._pending
        with contextlib.suppress(OSError):
            while data := self._sock.recv(1 << 20):
                buf += data
                pos = 0
                while len(buf) - pos >= header:
                    size, rid = REPLY.unpack_from(buf, pos)
                    end = pos + header + size
                    if end > len(buf):
                        break
                    slot = pending.pop(rid, None)
                    if slot is not None:  # None: its caller gave up waiting
                        slot.reply = bytes(buf[pos + header : end])
                        slot.done.release()
                    pos = end
                del buf[:pos]
        self._settle_pending()
        self._on_exit(self)

    def _settle_pending(self) -> None:
        with self._send_lock:
            self.closed = True
        evaluating, since = self.evaluating()  # final: the worker has exited
        for rid in list(self._pending):
            slot = self._pending.pop(rid, None)
            if slot is not None:
                slot.reply = DIED if since and rid == evaluating else RETRY
                slot.done.release()
