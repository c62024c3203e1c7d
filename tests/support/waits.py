"""Waiting for something to happen: poll a condition until it holds or a deadline passes, and the conditions on
processes and threads the tests wait for.

A fixed sleep before an assertion is either too short on a loaded machine (a flaky test) or too long everywhere
else (a slow one); waiting on the condition itself is neither.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def wait_until(
    observe: Callable[[], T],
    until: Callable[[T], object] = bool,
    *,
    timeout: float = 10.0,
    interval: float = 0.01,
    message: str | Callable[[], str] = "the awaited condition never held",
    ignoring: type[BaseException] | tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``observe()`` until ``until(value)`` holds; return that value.

    ``ignoring``: exceptions that mean "not yet" (a worker being replaced, a port not listening yet); any other
    exception propagates at once. After ``timeout`` seconds raise AssertionError with ``message`` (a callable is
    called then, e.g. to add a log written meanwhile) and the last value or exception observed.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = observe()
        except ignoring as exc:
            last: object = exc
        else:
            if until(value):
                return value
            last = value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"{text} (within {timeout:g} s; last observed: {last!r})")
        time.sleep(interval)


def has_exited(pid: int) -> bool:
    """``pid`` has ended: reaped, or a zombie (its memory and its file descriptors, so its sockets, are gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time that ``pid`` (all its threads) has used so far (proc(5): utime, stime)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def threads_running(function: types.FunctionType, *, thread_prefix: str = "") -> int:
    """How many threads of this process (named ``thread_prefix``…) have ``function`` on their stack now.

    For waiting until a background thread of the code under test has reached a blocking call (a Tail parked
    on the writer's commit notification, a watcher in its interval wait) when nothing else shows it.
    """
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    count = 0
    for ident, frame in sys._current_frames().items():
        if not names.get(ident, "").startswith(thread_prefix):
            continue
        current: types.FrameType | None = frame
        while current is not None and current.f_code is not function.__code__:
            current = current.f_back
        count += current is not None
    return count
