"""One error tree for the whole service.

Library errors (lmdb, OPA's Go engine, urllib3, protobuf, cryptography) are converted to these at the module
boundary that calls the library, so that the rest of the code -- and exactly one place, ``rpc.status`` -- only
ever sees these.

Every class carries a stable ``code`` (snake_case): what scripts, logs and ``--json`` error objects match on.
Code never recognises an error by its message; a new failure that callers must tell apart gets its own class.
"""

from __future__ import annotations

from typing import ClassVar


class AuthzLedgerError(Exception):
    """Base of every error this package raises on purpose."""

    code: ClassVar[str] = "error"

    def diagnostics(self) -> str:
        """A one-paragraph explanation fit for an operator's terminal."""
        return f"{type(self).__name__}: {self}"


class ConfigError(AuthzLedgerError):
    """The configuration (file, environment, --set flags) is invalid."""

    code = "config"


# --- Check path ---------------------------------------------------------------------------------------------


class RequestParseError(AuthzLedgerError):
    """The input document cannot be built from the CheckRequest.

    opa-envoy-plugin answers these with a normal CheckResponse: PERMISSION_DENIED, HTTP 400,
    body ``request_parse_error: <message>``; it is not an RPC failure.
    """

    code = "request_parse_error"

    def __init__(self, message: str, *, raw_from: int | None = None) -> None:
        super().__init__(message)
        self.raw_from = raw_from
        """Where request bytes the message repeats unquoted begin (Go's text, kept for the 400 body): before the
        message is stored or logged, everything from there is digested."""


class PolicyError(AuthzLedgerError):
    """The policy could not produce a usable decision; the Check RPC fails (Envoy applies status_on_error)."""

    code = "policy"


class PolicyLoadError(PolicyError):
    """Policy files or bundle could not be loaded or compiled."""

    code = "policy_load"


class PolicyEvaluationError(PolicyError):
    """The engine reported an error while evaluating (including strict builtin errors)."""

    code = "policy_evaluation"


class PolicyUndefinedError(PolicyError):
    """The decision document is undefined for this input."""

    code = "policy_undefined"


class PolicyResultError(PolicyError):
    """The decision has a shape opa-envoy-plugin rejects (e.g. an object without boolean ``allowed``)."""

    code = "policy_result"


class PolicyTimeoutError(PolicyError):
    """The engine did not answer within the per-decision timeout."""

    code = "policy_timeout"


class PolicyUnavailableError(PolicyError):
    """The engine cannot be reached (OPA down, evaluator process dead, too many decisions in flight)."""

    code = "policy_unavailable"


# --- Ledger -------------------------------------------------------------------------------------------------


class LedgerError(AuthzLedgerError):
    """The ledger cannot accept or store a decision."""

    code = "ledger"


class BackpressureError(LedgerError):
    """The writer queue stayed full for the whole bounded wait; the Check is denied (fail closed)."""

    code = "ledger_backpressure"


class LedgerWriteError(LedgerError):
    """A write transaction failed (disk full, map full, I/O error); Checks fail closed until it recovers."""

    code = "ledger_write"


class LedgerMapFullError(LedgerWriteError):
    """The LMDB map reached its size limit; the writer grows it up to ``ledger.map_max_size_mb``."""

    code = "ledger_map_full"


class LedgerClosedError(LedgerError):
    """The ledger is shutting down and takes no more decisions."""

    code = "ledger_closed"


class LedgerCorruptError(LedgerError):
    """Stored data does not verify. ``seq`` names the first bad sequence number when one is known.

    ``last_seq``: when the evidence left cannot tell which of several entries was changed (a leaf hash rewritten
    together with its entry leaves only the stored hash of the subtree above it to disagree, RFC 6962 §2.1), the
    bad entry lies in ``seq..last_seq``; otherwise ``last_seq == seq``.
    """

    code = "ledger_corrupt"

    def __init__(self, message: str, seq: int | None = None, *, last_seq: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq
        self.last_seq = seq if last_seq is None else last_seq

    def diagnostics(self) -> str:
        if self.seq is None:
            where = ""
        elif self.last_seq != self.seq:
            where = f" (first bad sequence number: {self.seq}; the bad entry is one of {self.seq}..{self.last_seq})"
        else:
            where = f" (first bad sequence number: {self.seq})"
        return f"ledger does not verify: {self}{where}"


class LedgerFileError(LedgerError):
    """A ledger file is damaged (truncated, pages overwritten) in a way LMDB cannot read safely. ``path`` names the
    file. Found before LMDB maps what it would fault on: a clear error instead of SIGBUS / SIGSEGV."""

    code = "ledger_file"

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class RollbackError(LedgerError):
    """The ledger is smaller than a checkpoint already published or witnessed: an old copy was restored."""

    code = "ledger_rollback"


class SigningKeyError(AuthzLedgerError):
    """A signing key is missing, malformed or readable by others."""

    code = "signing_key"


# --- Pure formats -------------------------------------------------------------------------------------------


class PermissionsError(AuthzLedgerError):
    """A data or keys directory others can write: whoever can write there can replace the ledger or the keys."""

    code = "permissions"


class TooManyStreamsError(AuthzLedgerError):
    """The audit API's streaming calls (ListEntries, Tail) are at their limit, for this client or in all."""

    code = "too_many_streams"


class CallerNotAllowedError(AuthzLedgerError):
    """A mutual-TLS caller of the Check listener whose certificate names no identity in
    ``server.allowed_client_ids``."""

    code = "caller_not_allowed"


class NoteError(AuthzLedgerError):
    """A C2SP signed note, checkpoint or verifier key is malformed or does not verify."""

    code = "note"


class ProofError(AuthzLedgerError):
    """An RFC 6962 proof is malformed, cannot be produced for the arguments, or does not verify."""

    code = "proof"


class NotFoundError(AuthzLedgerError):
    """The requested entry, checkpoint or proof does not exist."""

    code = "not_found"


# --- Read side ----------------------------------------------------------------------------------------------


class InvalidRequestError(AuthzLedgerError):
    """A read request is malformed whatever the ledger holds (negative index, start after end, bad id)."""

    code = "invalid_request"


class OutOfRangeError(AuthzLedgerError):
    """A read request names an index or tree size the ledger (or its latest checkpoint) has not reached yet.

    Unlike InvalidRequestError, the same request may succeed later, once the ledger has grown (gRPC OUT_OF_RANGE).
    """

    code = "out_of_range"


class TilesError(AuthzLedgerError):
    """A published C2SP tlog-tiles log does not verify: a tile, entry bundle or root contradicts the checkpoint."""

    code = "tiles_invalid"


class TilesRollbackError(TilesError):
    """A published log shows a smaller tree than the checkpoint an auditor already trusts (rolled back, or stale)."""

    code = "tiles_rollback"


class TilesForkError(TilesError):
    """A published log's signed tree differs from the trusted checkpoint's at that size: a fork (split view)."""

    code = "tiles_fork"


class TilesUnreadableError(AuthzLedgerError):
    """A published tlog-tiles location cannot be read: no such directory, server unreachable, HTTP or I/O error."""

    code = "tiles_unreadable"


# --- Witnesses ----------------------------------------------------------------------------------------------


class WitnessError(AuthzLedgerError):
    """A C2SP tlog-witness submission failed (unreachable, refused, or an answer that does not verify).

    Logged and counted by the publisher, never raised to a Check: witnesses add assurance, not availability.
    """

    code = "witness"
