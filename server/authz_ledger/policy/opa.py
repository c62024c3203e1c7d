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
  one ``json.loads`` of the answer and httpx's bookkeeping. One keep-alive ``httpx.Client`` is shared by all
  threads (it is thread-safe), its pool sized by ``pool_size``; ``max_in_flight`` bounds concurrent decisions
  so a slow OPA turns into fast PolicyUnavailableErrors rather than an unbounded queue.
- Builtin errors are errors (``strict-builtin-errors=true`` on every query, unless turned off), as in the
  embedded engine: by default OPA turns them into undefined, so ``allow if not deny`` with a failing builtin
  in ``deny`` would allow. opa-envoy-plugin does not set this; a policy that relies on it fails closed here.
- Policy version: the bundle revision(s) OPA reports in ``provenance`` (one bundle → its revision; several →
  ``name=revision`` pairs joined by commas), else the legacy top-level ``revision``, else ``opa/<version>``
  plus ``+<build_commit>`` when the binary has one. It is taken from every answer, so it follows OPA's own
  bundle downloads without a reload.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from typing import Any

import httpx

from authz_ledger.errors import (
    ConfigError,
    PolicyEvaluationError,
    PolicyTimeoutError,
    PolicyUnavailableError,
    PolicyUndefinedError,
)
from authz_ledger.policy import Evaluation
from authz_ledger.policy.embedded import DEFAULT_DECISION_PATH, normalise_decision_path

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
        limits = httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size)
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme == "unix":
            socket_path = parsed.path or parsed.netloc
            if not socket_path:
                raise ConfigError(f"opa engine: {url!r} names no socket path")
            transport = httpx.HTTPTransport(uds=socket_path, limits=limits)
            base_url = "http://opa"  # the host is not used for a unix socket, only sent as Host
        elif parsed.scheme in ("http", "https") and parsed.netloc:
            transport = httpx.HTTPTransport(limits=limits)
            base_url = f"{parsed.scheme}://{parsed.netloc}{parsed.path.rstrip('/')}"
        else:
            raise ConfigError(f"opa engine: url must be http(s)://host:port or unix:///path, not {url!r}")
        segments = "/".join(urllib.parse.quote(part, safe="") for part in self.decision_path.split("/"))
        strict = "&strict-builtin-errors=true" if strict_builtin_errors else ""
        self._request_path = f"/v1/data/{segments}?provenance=true{strict}"
        self._client = httpx.Client(transport=transport, timeout=timeout)
        # Built once: Client.post would re-parse and merge the URL and headers on every call (~130 us of CPU).
        self._url = httpx.URL(base_url + self._request_path)
        self._headers = httpx.Headers({"content-type": "application/json", "accept": "application/json"})
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
            self._client.close()

    def __enter__(self) -> OpaEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Internals ------------------------------------------------------------------------------------------

    def _post(self, content: bytes, remaining: float) -> bytes:
        # connect, write, read and the wait for a pooled connection each get what is left of the deadline
        phases = {"connect": remaining, "read": remaining, "write": remaining, "pool": remaining}
        request = httpx.Request("POST", self._url, content=content, headers=self._headers)
        request.extensions["timeout"] = phases
        try:
            response = self._client.send(request)
        except httpx.TimeoutException as exc:
            raise PolicyTimeoutError(
                f"OPA at {self.url} did not answer within the {self.timeout:g} s timeout ({type(exc).__name__})"
            ) from None
        except httpx.HTTPError as exc:
            raise PolicyUnavailableError(f"OPA at {self.url} is unavailable: {_describe(exc)}") from None
        if response.status_code != 200:
            raise _status_error(self.url, response.status_code, response.content)
        return response.content

    def _decode(self, body: bytes) -> Any:
        try:
            document = json.loads(body)
        except ValueError:
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


def _describe(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text
