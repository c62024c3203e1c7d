"""What the parent and an evaluator process say over the worker's pipe, and the parent's reading of a reply.

Every message is one ``Connection.send_bytes`` frame whose first byte says what follows. At start the worker sends
``READY`` or ``LOAD_FAILED`` + message. Then each request is the input JSON bytes as the caller gave them (the
parent never parses them), and each reply is ``RESULT`` + the engine's envelope, ``UNDEFINED`` [+ envelope, when it
carries ``print()`` output] or ``ERROR`` + message. The reply bytes are defined by :mod:`.go_engine`, which writes
them; they are named here too so that both sides read the whole protocol from one module.
"""

from __future__ import annotations

from typing import Any

from authz_ledger.errors import PolicyEvaluationError, PolicyUndefinedError
from authz_ledger.policy.embedded import go_engine
from authz_ledger.policy.embedded.go_engine import ERROR, RESULT, UNDEFINED

__all__ = ["ERROR", "LOAD_FAILED", "READY", "RESULT", "UNDEFINED", "decode_reply"]

READY = b"K"
LOAD_FAILED = b"L"


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
