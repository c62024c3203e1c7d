"""One error tree for the whole service.

Library errors (lmdb, OPA's Go engine, urllib3, protobuf, cryptography) are converted to these at the module
boundary that calls the library, so that the rest of the code -- and exactly one place, ``rpc.status`` -- only
ever sees these.
"""

from __future__ import annotations


class AuthzLedgerError(Exception):
    """Base of every error this package raises on purpose."""

    def diagnostics(self) -> str:
        """A one-paragraph explanation fit for an operator's terminal."""
        return f"{type(self).__name__}: {self}"


class ConfigError(AuthzLedgerError):
    """The configuration (file, environment, --set flags) is invalid."""


# --- Check path ---------------------------------------------------------------------------------------------


class RequestParseError(AuthzLedgerError):
    """The input document cannot be built from the CheckRequest.

    opa-envoy-plugin answers these with a normal CheckResponse: PERMISSION_DENIED, HTTP 400,
    body ``request_parse_error: <message>``; it is not an RPC failure.
    """


class PolicyError(AuthzLedgerError):
    """The policy could not produce a usable decision; the Check RPC fails (Envoy applies status_on_error)."""


class PolicyLoadError(PolicyError):
    """Policy files or bundle could not be loaded or compiled."""


class PolicyEvaluationError(PolicyError):
    """The engine reported an error while evaluating (including strict builtin errors)."""


class PolicyUndefinedError(PolicyError):
    """The decision document is undefined for this input."""


class PolicyResultError(PolicyError):
    """The decision has a shape opa-envoy-plugin rejects (e.g. an object without boolean ``allowed``)."""


class PolicyTimeoutError(PolicyError):
    """The engine did not answer within the per-decision timeout."""


class PolicyUnavailableError(PolicyError):
    """The engine cannot be reached (OPA down, evaluator process dead, too many decisions in flight)."""


# --- Ledger -------------------------------------------------------------------------------------------------


class LedgerError(AuthzLedgerError):
    """The ledger cannot accept or store a decision."""


class BackpressureError(LedgerError):
    """The writer queue stayed full for the whole bounded wait; the Check is denied (fail closed)."""


class LedgerWriteError(LedgerError):
    """A write transaction failed (disk full, map full, I/O error); Checks fail closed until it recovers."""


class LedgerClosedError(LedgerError):
    """The ledger is shutting down and takes no more decisions."""


class LedgerCorruptError(LedgerError):
    """Stored data does not verify. ``seq`` names the first bad sequence number when one is known."""

    def __init__(self, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq

    def diagnostics(self) -> str:
        where = f" (first bad sequence number: {self.seq})" if self.seq is not None else ""
        return f"ledger does not verify: {self}{where}"


class RollbackError(LedgerError):
    """The ledger is smaller than a checkpoint already published or witnessed: an old copy was restored."""


class SigningKeyError(AuthzLedgerError):
    """A signing key is missing, malformed or readable by others."""


# --- Pure formats -------------------------------------------------------------------------------------------


class NoteError(AuthzLedgerError):
    """A C2SP signed note, checkpoint or verifier key is malformed or does not verify."""


class ProofError(AuthzLedgerError):
    """An RFC 6962 proof is malformed, cannot be produced for the arguments, or does not verify."""


class NotFoundError(AuthzLedgerError):
    """The requested entry, checkpoint or proof does not exist."""


# --- Read side ----------------------------------------------------------------------------------------------


class InvalidRequestError(AuthzLedgerError):
    """A read request is malformed whatever the ledger holds (negative index, start after end, bad id)."""


class OutOfRangeError(AuthzLedgerError):
    """A read request names an index or tree size the ledger (or its latest checkpoint) has not reached yet.

    Unlike InvalidRequestError, the same request may succeed later, once the ledger has grown (gRPC OUT_OF_RANGE).
    """


# --- Witnesses ----------------------------------------------------------------------------------------------


class WitnessError(AuthzLedgerError):
    """A C2SP tlog-witness submission failed (unreachable, refused, or an answer that does not verify).

    Logged and counted by the publisher, never raised to a Check: witnesses add assurance, not availability.
    """
