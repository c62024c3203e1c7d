"""OPA's own Rego engine (its Go ``rego`` package), loaded into an evaluator process.

The engine is OPA v1.20.2 built as a C shared library and shipped by the PyPI package
``opa-golib-python-bindings`` (module ``opa_bindings``). Only its ctypes loader is used: the input document goes in
as the JSON bytes the Check handler already made, and the answer comes back as the library's JSON envelope, which
is passed to the parent unparsed -- so number text survives both ways and the evaluator spends its CPU in Go, not
in Python.

This module is imported in evaluator processes only (see :mod:`authz_ledger.policy.embedded`): the Go runtime
starts threads when the library loads, and a process with Go loaded must never fork. The parent process never
loads it.

Behaviour that differs from OPA's Envoy plugin, and why it is kept:

* **Strict builtin errors.** The library evaluates with ``StrictBuiltinErrors``: a builtin that fails
  (``time.parse_rfc3339_ns("nope")``) is an evaluation error, where the plugin makes that expression undefined
  and the default decision applies. Here the Check fails by ``policy.on_error`` instead. This is the fail-closed
  choice -- with the plugin's default, ``allow if not deny`` turns a failing ``deny`` into an allow.
* **Compile errors at load.** The library compiles lazily, when a query is first prepared; loading prepares a
  constant query, so that a policy that does not compile is refused at load with its error (on a reload the old
  policy keeps serving), then warms the decision query up on an empty input.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
from typing import Any

import orjson

from authz_ledger.errors import PolicyLoadError
from authz_ledger.policy import decode_answer

# The name its print() log lines carried before the module moved into embedded/: log filters keep matching.
logger = logging.getLogger("authz_ledger.policy.go_engine")

PACKAGE = "opa-golib-python-bindings"
VERSION = "0.4.4"
INSTALL_HINT = (
    f"the embedded engine needs {PACKAGE}=={VERSION} (OPA's Go engine); on Python < 3.14 install it with "
    f"`pip install --no-deps --ignore-requires-python --require-hashes -r engine-requirements.txt` "
    f"(see README), or set policy.engine=opa"
)

# Replies to the parent: the first byte says what follows.
RESULT = b"R"  # + the library's envelope JSON: {"prints": [...] | null, "result": [{"expressions": [...]}]}
UNDEFINED = b"U"  # [+ the envelope, when it carries print() output]
ERROR = b"E"  # + message


def _load_library() -> Any:
    try:
        from opa_bindings import _native  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise PolicyLoadError(f"{INSTALL_HINT}: {exc}") from None
    try:
        return _native.load()
    except OSError as exc:  # no such platform build, or a broken install
        raise PolicyLoadError(f"cannot load OPA's Go engine ({exc}); {INSTALL_HINT}") from None


class GoEvaluator:
    """One OPA engine instance with the policy's modules and data loaded and the decision query prepared."""

    def __init__(self, modules: dict[str, str], data_json: str, entrypoint: str) -> None:
        # Go's collector keeps ~1.2 cores busy per evaluating thread at the default GOGC=100; 400 measured 1.5x
        # the evaluations per second. GOGC is read when the Go runtime starts, i.e. when the library loads.
        os.environ.setdefault("GOGC", "400")
        self._lib = _load_library()
        self._handle = self._lib.OpaNew()
        self._query = entrypoint.replace("/", ".").encode()
        for path in sorted(modules):
            self._check_load(self._call(self._lib.OpaAddPolicy, path.encode(), modules[path].encode()), path)
        self._check_load(self._call(self._lib.OpaAddData, b"", data_json.encode()), "data")
        # The library compiles the modules when it prepares a query, i.e. at the first evaluation. Preparing the
        # constant query `true` compiles them all without running a rule, so a policy that does not compile is
        # refused here, and one that computes forever on any input does not hang the load.
        probe = self._call(self._lib.OpaEvalQuery, b"true", b"", 0, 0)
        if probe.startswith(b'{"error"'):
            raise PolicyLoadError(_error_of(probe)[1])
        # The library prepares (compiles) each distinct query at its first evaluation -- 0.4 s for a policy of
        # 3,000 rules -- so the decision query is warmed up here, on an empty input, before the worker reports
        # ready: otherwise every new worker's first decision would spend its timeout compiling. Its answer does
        # not matter. A policy that does not finish deciding an empty input fails to load, at the start-up
        # timeout, instead of timing out every worker's first decision.
        self._call(self._lib.OpaEvalDocument, self._query, b"{}", 0, 0)

    def _call(self, fn: Any, *args: Any) -> bytes:
        pointer = fn(self._handle, *args)
        if not pointer:
            return b'{"error":{"code":"internal","message":"OPA\'s engine returned no answer"}}'
        try:
            return ctypes.string_at(pointer)
        finally:
            self._lib.OpaFreeString(pointer)

    @staticmethod
    def _check_load(envelope: bytes, what: str) -> None:
        if envelope.startswith(b'{"error"'):
            _, message = _error_of(envelope)
            raise PolicyLoadError(message if what in message else f"{what}: {message}")

    def evaluate(self, input_json: bytes) -> bytes:
        """One decision: ``RESULT`` + envelope, ``UNDEFINED``, or ``ERROR`` + message. Never raises."""
        if b"\0" in input_json:  # a C string ends at NUL; JSON text never holds a raw one
            return ERROR + b"the input document is not valid JSON: it contains a NUL byte"
        envelope = self._call(self._lib.OpaEvalDocument, self._query, input_json, 0, 0)
        if envelope.startswith(b'{"error"'):
            code, message = _error_of(envelope)
            if code == "invalid_json":
                message = f"the input document is not valid JSON: {message}"
            return ERROR + message.encode("utf-8", "replace")
        if envelope.endswith(b'"result":null}'):
            # Undefined; the envelope goes along only when it carries print() output, for the parent to log.
            return UNDEFINED + envelope if envelope.startswith(b'{"prints":[') else UNDEFINED
        return RESULT + envelope

    def close(self) -> None:
        """Free the engine instance. A worker process just exits; a process that loaded the engine itself
        (:mod:`.inprocess`) frees it here, once no evaluation is running."""
        if self._handle:
            self._lib.OpaDestroy(self._handle)
            self._handle = 0


_ERRORS_OCCURRED = re.compile(r"^(?:bundle activation failed: )?\d+ errors? occurred:\s*")


def _error_of(envelope: bytes) -> tuple[str, str]:
    """The library's error code and message, on one line (``policy.rego:3: rego_type_error: ...``)."""
    try:
        error = orjson.loads(envelope)["error"]
        code, message = str(error.get("code", "")), str(error.get("message", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        return "", envelope.decode("utf-8", "replace")
    message = _ERRORS_OCCURRED.sub("", message)
    return code, " ".join(message.split())


def log_prints(envelope: bytes) -> None:
    """Rego ``print()`` output, logged by the parent (so it takes the service's log format): one line per call,
    at info, with the policy file and line."""
    if not envelope.startswith(b'{"prints":['):
        return
    try:
        prints = decode_answer(envelope).get("prints") or []
    except (ValueError, AttributeError):
        return
    for entry in prints:
        logger.info("policy print (%s): %s", entry.get("location", "?"), entry.get("message", ""))


def decode_result(envelope: bytes) -> Any:
    """The decision's value from a ``RESULT`` envelope (parent side). ValueError if it has another shape."""
    document = decode_answer(envelope)
    if document.get("prints"):
        log_prints(envelope)
    results = document.get("result")
    if not isinstance(results, list) or len(results) != 1:
        raise ValueError(f"the decision has {len(results) if isinstance(results, list) else 0} results")
    expressions = results[0].get("expressions")
    if not isinstance(expressions, list) or len(expressions) != 1:
        raise ValueError("OPA's engine returned an unexpected result shape")
    return expressions[0]["value"]
