"""The opa engine: decisions from a real OPA server through its Data API.

``POST /v1/data/<decision path>?provenance=true`` with ``{"input": ...}``; OPA answers
``{"result": ..., "provenance": {...}}``, or no ``result`` when the decision is undefined
(https://www.openpolicyagent.org/docs/latest/rest-api/#get-a-document-with-input).

Invariants:

- Every call ends within ``timeout`` (plus scheduling slack): waiting for an in-flight slot, for a pooled
  connection, connecting, sending and reading all share one deadline; if OPA answers late anyway the answer is
  discarded as a timeout. No path blocks without a bound, so a paused or wedged OPA cannot hang Check calls.
- Fail closed: connection refused or reset → PolicyUnavailableError; deadline → PolicyTimeoutError; HTTP
  500 with OPA's error body (evaluation errors, conflicts, strict builtin errors) → PolicyEvaluationError; any
  other non-200 → PolicyUnavailableError; a body that is not a JSON object → PolicyEvaluationError; no
  ``result`` → PolicyUndefinedError.
- The input bytes are spliced into the request body, never parsed here: the parent process spends its CPU on
  one ``json.loads`` of the answer. The HTTP client is libcurl (pycurl): a pool of up to ``pool_size`` easy
  handles, each keeping its connection alive, taken by one caller at a time (``perform`` releases the GIL);
  ``max_in_flight`` bounds concurrent decisions so a slow OPA turns into fast PolicyUnavailableErrors rather
  than an unbounded queue. Measured here against a real OPA, per decision in the server process: httpx ~620 us
  of CPU, urllib3 ~250-450 us, pycurl ~60 us -- on a Check path whose whole budget is a few hundred.
- Builtin errors are errors (``strict-builtin-errors=true`` on every query, unless turned off), as in the
  embedded engine: by default OPA turns them into undefined, so ``allow if not deny`` with a failing builtin
  in ``deny`` would allow. opa-envoy-plugin does not set this; a policy that relies on it fails closed here.
- Policy version: the bundle revision(s) OPA reports in ``provenance`` (one bundle → its revision; several →
  ``name=revision`` pairs joined by commas), else the legacy top-level ``revision``, else ``opa/<version>``
  plus ``+<build_commit>`` when the binary has one. It is taken from every answer, so it follows OPA's own
  bundle downloads without a reload.
"""

from __future__ import annotations

import io
import json
import queue
import threading
import time
import urllib.parse
from typing import Any

import pycurl

from authz_ledger.errors import (
    ConfigError,
    PolicyEvaluationError,
    PolicyTimeoutError,
    PolicyUnavailableError,
    PolicyUndefinedError,
)
from authz_ledger.policy import DEFAULT_DECISION_PATH, Evaluation, decode_answer, normalise_decision_path

_UNKNOWN_VERSION = "opa/unknown"


class OpaEngine:
    """PolicyEngine asking an OPA server over HTTP (TCP or a unix socket). Thread-safe."""

    name = "opa"

    def __init__(
        self,
        url: str,
        decision_path: str = DEFAULT_DECISION_PATH,
        *,
        timeout: float = 1.0,
        max_in_flight: int = 64,
        pool_size: int = 16,
        strict_builtin_errors: bool = True,
    ) -> None:
        """``url``: ``http://host:port`` (or https) or ``unix:///path/to/opa.sock``. Does not contact OPA."""
        if not timeout > 0:
            raise ConfigError(f"opa engine: timeout must be positive, not {timeout}")
        if max_in_flight < 1 or pool_size < 1:
            raise ConfigError("opa engine: max_in_flight and pool_size must be at least 1")
        self.decision_path = normalise_decision_path(decision_path)
        self.url = url
        self.timeout = timeout
        parsed = urllib.parse.urlsplit(url)
        self._socket_path = ""
        if parsed.scheme == "unix":
            self._socket_path = parsed.path or parsed.netloc
            if not self._socket_path:
                raise ConfigError(f"opa engine: {url!r} names no socket path")
            base = "http://localhost"  # sent as Host only; the connection goes to the socket
        elif parsed.scheme in ("http", "https") and parsed.hostname:
            base = f"{parsed.scheme}://{parsed.netloc}{parsed.path.rstrip('/')}"
        else:
            raise ConfigError(f"opa engine: url must be http(s)://host:port or unix:///path, not {url!r}")
        segments = "/".join(urllib.parse.quote(part, safe="") for part in self.decision_path.split("/"))
        strict = "&strict-builtin-errors=true" if strict_builtin_errors else ""
        self._request_url = f"{base}/v1/data/{segments}?provenance=true{strict}"
        self._handles: queue.LifoQueue[pycurl.Curl] = queue.LifoQueue()
        self._handles_made = 0
        self._handles_lock = threading.Lock()
        self._pool_size = pool_size
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._max_in_flight = max_in_flight
        self._version = _UNKNOWN_VERSION
        self._closed = False

    # PolicyEngine ---------------------------------------------------------------------------------------

    def evaluate(self, input_json: bytes) -> Evaluation:
        """Ask OPA for the decision on one input document (JSON bytes). Raises PolicyError subclasses only."""
        started = time.perf_counter_ns()
        deadline = time.monotonic() + self.timeout
        if self._closed:
            raise PolicyUnavailableError("opa engine is closed")
        if not self._slots.acquire(timeout=self.timeout):
            raise PolicyUnavailableError(
                f"too many decisions in flight ({self._max_in_flight} waiting on OPA at {self.url})"
            )
        try:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PolicyTimeoutError(f"OPA decision exceeded the {self.timeout:g} s timeout")
            body = self._post(b'{"input":' + input_json + b"}", remaining)
        finally:
            self._slots.release()
        if time.monotonic() > deadline:
            raise PolicyTimeoutError(f"OPA answered after the {self.timeout:g} s timeout")
        result = self._decode(body)
        return Evaluation(result, self._version, time.perf_counter_ns() - started)

    def policy_version(self) -> str:
        """The version OPA reported with its latest answer (``opa/unknown`` before the first one)."""
        return self._version

    def reload(self) -> str:
        """OPA owns its policy (bundles, ``--watch``): nothing to do here but report the current version."""
        return self._version

    def close(self) -> None:
        """Close the pooled connections. Idempotent."""
        if not self._closed:
            self._closed = True
            while True:
                try:
                    self._handles.get_nowait().close()
                except queue.Empty:
                    break

    def __enter__(self) -> OpaEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Internals ------------------------------------------------------------------------------------------

    def _handle(self, remaining: float) -> pycurl.Curl:
        """A free keep-alive handle; a new one while fewer than pool_size exist, else wait for one."""
        try:
            return self._handles.get_nowait()
        except queue.Empty:
            pass
        with self._handles_lock:
            if self._handles_made < self._pool_size:
                self._handles_made += 1
                return self._new_handle()
        try:
            return self._handles.get(timeout=remaining)
        except queue.Empty:
            raise PolicyTimeoutError(
                f"no connection to OPA at {self.url} became free within the {self.timeout:g} s timeout"
            ) from None

    def _new_handle(self) -> pycurl.Curl:
        c = pycurl.Curl()
        c.setopt(pycurl.URL, self._request_url)
        c.setopt(pycurl.POST, 1)
        # "Expect:" stops libcurl from waiting for a 100-continue round trip on larger bodies.
        c.setopt(pycurl.HTTPHEADER, ["Content-Type: application/json", "Accept: application/json", "Expect:"])
        c.setopt(pycurl.NOSIGNAL, 1)  # timeouts without SIGALRM: we are in a threaded server
        c.setopt(pycurl.FOLLOWLOCATION, 0)
        if self._socket_path:
            c.setopt(pycurl.UNIX_SOCKET_PATH, self._socket_path)
        return c

    def _post(self, content: bytes, remaining: float) -> bytes:
        # Connecting, sending and reading share what is left of the decision's deadline.
        handle = self._handle(remaining)
        buffer = io.BytesIO()
        try:
            timeout_ms = max(1, int(remaining * 1000))
            handle.setopt(pycurl.TIMEOUT_MS, timeout_ms)
            handle.setopt(pycurl.CONNECTTIMEOUT_MS, timeout_ms)
            handle.setopt(pycurl.POSTFIELDS, content)
            handle.setopt(pycurl.WRITEDATA, buffer)
            handle.perform()
            status = int(handle.getinfo(pycurl.RESPONSE_CODE))
        except pycurl.error as exc:
            code = exc.args[0] if exc.args else 0
            handle.close()  # its connection is in an unknown state: never reuse it
            with self._handles_lock:
                self._handles_made -= 1
            if code == pycurl.E_OPERATION_TIMEDOUT:
                raise PolicyTimeoutError(
                    f"OPA at {self.url} did not answer within the {self.timeout:g} s timeout"
                ) from None
            raise PolicyUnavailableError(f"OPA at {self.url} is unavailable: {_describe(exc)}") from None
        self._handles.put(handle)
        body = buffer.getvalue()
        if status != 200:
            raise _status_error(self.url, status, body)
        return body

    def _decode(self, body: bytes) -> Any:
        try:
            document = decode_answer(body)
        except ValueError:  # orjson.JSONDecodeError is one
            raise PolicyEvaluationError(f"OPA's answer is not JSON: {body[:80]!r}") from None
        if not isinstance(document, dict):
            raise PolicyEvaluationError(f"OPA's answer is not a JSON object: {body[:80]!r}")
        provenance = document.get("provenance")
        if isinstance(provenance, dict):
            self._version = version_from_provenance(provenance)
        if "result" not in document:
            raise PolicyUndefinedError(f"the decision data.{self.decision_path.replace('/', '.')} is undefined")
        return document["result"]


def version_from_provenance(provenance: dict[str, Any]) -> str:
    """The policy version to record, from OPA's ``provenance`` object (see the module docstring)."""
    bundles = provenance.get("bundles")
    if isinstance(bundles, dict):
        revisions = sorted(
            (str(name), str(info["revision"]))
            for name, info in bundles.items()
            if isinstance(info, dict) and info.get("revision")
        )
        if len(revisions) == 1:
            return revisions[0][1]
        if revisions:
            return ",".join(f"{name}={revision}" for name, revision in revisions)
    revision = provenance.get("revision")
    if isinstance(revision, str) and revision:
        return revision
    version = provenance.get("version")
    if not isinstance(version, str) or not version:
        return _UNKNOWN_VERSION
    commit = provenance.get("build_commit")
    return f"opa/{version}+{commit}" if isinstance(commit, str) and commit else f"opa/{version}"


def _status_error(url: str, status: int, body: bytes) -> PolicyEvaluationError | PolicyUnavailableError:
    try:
        error = json.loads(body)
    except ValueError:
        error = None
    if status == 500 and isinstance(error, dict) and "code" in error:
        # OPA's error shape: {"code": "internal_error", "message": "error(s) occurred while evaluating query",
        #   "errors": [{"code": "eval_conflict_error", "message": "...", "location": {...}}]}
        details = [
            f"{item.get('code')}: {item.get('message')}{_location(item.get('location'))}"
            for item in error.get("errors") or []
            if isinstance(item, dict)
        ]
        summary = "; ".join(details) if details else f"{error.get('code')}: {error.get('message', '')}"
        return PolicyEvaluationError(f"OPA evaluation failed: {summary}")
    if isinstance(error, dict) and "message" in error:
        return PolicyUnavailableError(f"OPA at {url} answered HTTP {status}: {error.get('message')}")
    return PolicyUnavailableError(f"OPA at {url} answered HTTP {status}")


def _location(location: Any) -> str:
    if isinstance(location, dict) and location.get("file"):
        return f" ({location.get('file')}:{location.get('row')})"
    return ""


def _describe(exc: Exception) -> str:
    if isinstance(exc, pycurl.error) and len(exc.args) == 2:
        return f"curl error {exc.args[0]}: {exc.args[1]}"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text
