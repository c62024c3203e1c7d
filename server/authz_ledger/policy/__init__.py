"""Policy engines behind one interface.

A ``PolicyEngine`` turns an input document (already serialised to JSON bytes, because every engine needs bytes
and the ledger records the same bytes) into the raw policy result for the configured decision path. Engines raise
only ``errors.PolicyError`` subclasses; mapping results to CheckResponses is ``result``'s job, not theirs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from authz_ledger.errors import ConfigError

DEFAULT_DECISION_PATH = "envoy/authz/allow"

_LONG_DIGITS = re.compile(rb"\d{19}")


def decode_answer(body: bytes) -> Any:
    """An engine's JSON answer as Python values. orjson is fast but reads integers beyond 64 bits as rounded floats
    and refuses numbers beyond float64 (a policy may return ``1e400`` as written in a body): those answers take the
    stdlib, which keeps big integers exact and reads such numbers as infinities. ValueError if it is not JSON or
    is nested deeper than Python's recursion limit (orjson stops at 1,024 levels)."""
    if _LONG_DIGITS.search(body) is None:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(body)
    except RecursionError:  # an answer nested deeper than Python's recursion limit (a policy echoing a body)
        raise ValueError("the answer is nested too deeply to read") from None


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One policy decision as the engine produced it."""

    result: Any
    """The value of the decision document (JSON types). Never undefined: that is PolicyUndefinedError."""
    policy_version: str
    """Bundle revision, digest of the loaded policy files (embedded) or the revision OPA reports (opa)."""
    eval_ns: int
    """Wall time spent in the engine for this decision, including any IPC or HTTP round trip."""


class PolicyEngine(Protocol):
    """What the Check handler needs from an engine. Implementations are thread-safe."""

    name: str
    """``embedded`` or ``opa``: recorded in every ledger entry."""

    decision_path: str
    """Slash-separated decision path, e.g. ``envoy/authz/allow`` (``data.envoy.authz.allow``)."""

    def evaluate(self, input_json: bytes) -> Evaluation:
        """Evaluate the decision for one input document. Raises PolicyError subclasses only."""
        ...

    def policy_version(self) -> str:
        """The version currently serving (for logs and health output)."""
        ...

    def reload(self) -> str:
        """Reload policy atomically; on failure keep serving the old one and raise PolicyLoadError.

        Returns the new policy version. Engines that do not own their policy (opa) return the current version.
        """
        ...

    def close(self) -> None:
        """Release processes, connections and watchers. Idempotent."""
        ...


def normalise_decision_path(path: str) -> str:
    parts = [part for part in path.strip().strip("/").split("/") if part]
    if parts and parts[0] == "data":
        parts = parts[1:]  # "data/envoy/authz/allow" and "envoy/authz/allow" name the same document
    if not parts:
        raise ConfigError(f"decision path {path!r} names no document")
    return "/".join(parts)
