"""What the parent and an evaluator process say over the worker's socket, and the parent's reading of a reply.

At start the worker sends one ``Connection.send_bytes`` frame: ``READY`` or ``LOAD_FAILED`` + message. From then
on both sides use the frames below, so that one ``recv`` can carry many decisions each way: the parent writes a
request whenever a Check asks, the worker reads every request waiting in its socket, evaluates them in order and
writes the replies back together. Several decisions per system call and per wake-up of each side is what keeps
the engine's cost on the server's core low.

- request: ``REQUEST`` header (payload length, request id, deadline as ``time.monotonic_ns``) + the input JSON bytes
  as the Check handler made them (the parent never parses them);
- reply: ``REPLY`` header (payload length, request id) + ``RESULT`` + the engine's envelope, ``UNDEFINED``
  [+ envelope, when it carries ``print()`` output], ``ERROR`` + message, or ``EXPIRED`` when the deadline had
  passed before the worker reached the request (it was not evaluated).

The worker also publishes, in a shared two-slot array (:data:`STATE_SLOTS`), the id of the request it is evaluating
and when it started (``0`` while idle): the parent's watchdog reads it to end an evaluation that outlives the
timeout, and a caller whose deadline passed reads it to tell "evaluating" from "still queued".

The reply bytes are defined by :mod:`.go_engine`, which writes them; they are named here too so that both sides
read the whole protocol from one module.
"""

from __future__ import annotations

import struct
from typing import Any

from authz_ledger.errors import PolicyEvaluationError, PolicyUndefinedError
from authz_ledger.policy.embedded import go_engine
from authz_ledger.policy.embedded.go_engine import ERROR, RESULT, UNDEFINED

__all__ = [
    "ERROR",
    "EXPIRED",
    "LOAD_FAILED",
    "READY",
    "REPLY",
    "REQUEST",
    "RESULT",
    "STATE_EVALUATING",
    "STATE_SINCE_NS",
    "STATE_SLOTS",
    "UNDEFINED",
    "decode_reply",
]

READY = b"K"
LOAD_FAILED = b"L"
EXPIRED = b"X"

REQUEST = struct.Struct("<IQq")  # payload length, request id, deadline (time.monotonic_ns)
REPLY = struct.Struct("<IQ")  # payload length, request id

STATE_SLOTS = 2
STATE_EVALUATING = 0  # the id of the request being evaluated (meaningful while STATE_SINCE_NS is not 0)
STATE_SINCE_NS = 1  # time.monotonic_ns() when its evaluation started; 0 while the worker is idle


def decode_reply(reply: bytes) -> Any:
    """The decision's value from a worker's reply; the PolicyError it stands for otherwise."""
    kind, body = reply[:1], reply[1:]
    if kind == RESULT:
        try:
            return go_engine.decode_result(body)
        except (ValueError, KeyError, TypeError) as exc:
            raise PolicyEvaluationError(f"OPA's engine returned an unreadable answer: {exc}") from None
    if kind == UNDEFINED:
        go_engine.log_prints(body)
        raise PolicyUndefinedError("the decision is undefined for this input")
    if kind == ERROR:
        raise PolicyEvaluationError(body.decode("utf-8", "replace"))
    raise PolicyEvaluationError(f"evaluator sent an unrecognised reply {reply[:16]!r}")
