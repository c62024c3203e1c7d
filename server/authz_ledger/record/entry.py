"""The ledger entry: one ``authzledger.v1.LedgerEntry`` per Check, encoded once, stored and hashed as is.

Handlers encode every field except ``sequence``; the writer prepends that (:func:`sequence_prefix`). What
is stored is exactly what is hashed (RFC 6962 §2.1: leaf = SHA-256(0x00 || bytes)), so verification never
re-serialises anything. Readers decode with ``decode``; unknown (newer) fields survive decoding untouched.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from authz_ledger._proto.authzledger.v1 import ledger_pb2 as _pb
from authz_ledger.errors import LedgerCorruptError

SCHEMA = 1

MAX_ENTRY_BYTES = 65535
"""C2SP tlog-tiles entry bundles prefix each entry with a u16 length, so no entry may be larger. Huge requests
(thousands of headers, long paths) keep every searchable field, but their recorded input (and, rarely, result)
is replaced by its size and SHA-256: the entry still proves what was decided, and the digest matches the
document anyone holding the request can rebuild."""
_STRING_FIELDS = (
    "decision_id", "request_id", "source_address", "source_principal", "destination_address",
    "destination_principal", "method", "host", "path", "engine", "decision_path", "policy_version", "error",
    "traceparent", "tracestate", "b3",
)  # fmt: skip
_SEQUENCE_PREFIX_MAX = 11  # tag byte + a 10-byte varint: the longest sequence_prefix

LedgerEntry = _pb.LedgerEntry
Outcome = _pb.Outcome
OUTCOME_ALLOW = _pb.OUTCOME_ALLOW
OUTCOME_DENY = _pb.OUTCOME_DENY
OUTCOME_ERROR = _pb.OUTCOME_ERROR
OUTCOME_NAMES: dict[int, str] = {OUTCOME_ALLOW: "allow", OUTCOME_DENY: "deny", OUTCOME_ERROR: "error"}


@dataclass(slots=True)
class DecisionRecord:
    """Everything the Check handler knows about one decision, before encoding."""

    time_unix_nano: int
    decision_id: str
    request_id: str = ""
    source_address: str = ""
    source_port: int = 0
    source_principal: str = ""
    destination_address: str = ""
    destination_port: int = 0
    destination_principal: str = ""
    method: str = ""
    host: str = ""
    path: str = ""
    input_json: bytes = b""
    engine: str = ""
    decision_path: str = ""
    policy_version: str = ""
    result_json: bytes = b""
    outcome: int = OUTCOME_ERROR
    allowed: bool = False
    http_status: int = 0
    dry_run: bool = False
    grpc_code: int = 0
    error: str = ""
    eval_ns: int = 0
    traceparent: str = ""
    tracestate: str = ""
    b3: str = ""
    error_class: str = ""
    """Not stored: the class of the error behind ``error`` (its metric label), so nothing parses the message."""

    def encode(self) -> bytes:
        """Encode without ``sequence`` (the writer prepends it); never more than MAX_ENTRY_BYTES in all."""
        data = self._encode()
        if len(data) + _SEQUENCE_PREFIX_MAX <= MAX_ENTRY_BYTES:
            return data
        self.input_json = _too_large(self.input_json)
        data = self._encode()
        if len(data) + _SEQUENCE_PREFIX_MAX > MAX_ENTRY_BYTES:
            self.result_json = _too_large(self.result_json)
            # Every other string field is bounded too (request ids, trace headers, principals come from the
            # client): 1 KiB each keeps the sum of all of them far below the limit.
            for name in _STRING_FIELDS:
                value = getattr(self, name)
                if len(value) > 1024:
                    setattr(self, name, value[:1024])
            data = self._encode()
        assert len(data) + _SEQUENCE_PREFIX_MAX <= MAX_ENTRY_BYTES, "entry size bound"
        return data

    def _encode(self) -> bytes:
        msg = _pb.LedgerEntry(
            schema=SCHEMA,
            time_unix_nano=self.time_unix_nano,
            decision_id=self.decision_id,
            request_id=self.request_id,
            method=self.method,
            host=self.host,
            path=self.path,
            input_json=self.input_json,
            engine=self.engine,
            decision_path=self.decision_path,
            policy_version=self.policy_version,
            result_json=self.result_json,
            outcome=self.outcome,  # type: ignore[arg-type]
            allowed=self.allowed,
            http_status=self.http_status,
            dry_run=self.dry_run,
            grpc_code=self.grpc_code,
            error=self.error,
            eval_ns=self.eval_ns,
            traceparent=self.traceparent,
            tracestate=self.tracestate,
            b3=self.b3,
        )
        if self.source_address or self.source_principal:
            msg.source.address = self.source_address
            msg.source.port = self.source_port
            msg.source.principal = self.source_principal
        if self.destination_address or self.destination_principal:
            msg.destination.address = self.destination_address
            msg.destination.port = self.destination_port
            msg.destination.principal = self.destination_principal
        return msg.SerializeToString()


def _too_large(document: bytes) -> bytes:
    digest = hashlib.sha256(document).hexdigest()
    return json.dumps({"too_large_to_record": {"bytes": len(document), "sha256": digest}}).encode()


def sequence_prefix(seq: int) -> bytes:
    """Protobuf encoding of LedgerEntry field 1 (``sequence``, varint), written first in every entry.

    Handlers encode everything else before a sequence number exists; protobuf lets fields appear in any
    order and concatenated encodings merge, so the writer only prepends this. The field is written even for 0
    so that every entry starts with it. Unrolled for the sizes a ledger reaches: this runs once per entry.
    """
    if seq < 1 << 7:
        return bytes((8, seq))
    if seq < 1 << 14:
        return bytes((8, seq & 0x7F | 0x80, seq >> 7))
    if seq < 1 << 21:
        return bytes((8, seq & 0x7F | 0x80, seq >> 7 & 0x7F | 0x80, seq >> 14))
    if seq < 1 << 28:
        return bytes((8, seq & 0x7F | 0x80, seq >> 7 & 0x7F | 0x80, seq >> 14 & 0x7F | 0x80, seq >> 21))
    out = bytearray(b"\x08")
    while seq >= 0x80:
        out.append(seq & 0x7F | 0x80)
        seq >>= 7
    out.append(seq)
    return bytes(out)


def decode(data: bytes, seq: int | None = None) -> Any:
    """Parse stored entry bytes; LedgerCorruptError (naming ``seq``) when they are not a LedgerEntry."""
    msg = _pb.LedgerEntry()
    try:
        msg.ParseFromString(data)
    except DecodeError as e:
        raise LedgerCorruptError(f"entry is not a valid LedgerEntry: {e}", seq) from e
    return msg


def to_json_fields(msg: Any, *, documents: bool = True) -> dict[str, Any]:
    """Decoded fields for ``log --json`` and the audit API (JSON values, not protobuf JSON strings); without
    ``documents``, all but ``input`` and ``result`` (whose JSON text the caller places itself)."""
    out: dict[str, Any] = {
        "sequence": msg.sequence,
        "time_unix_nano": msg.time_unix_nano,
        "decision_id": msg.decision_id,
        "request_id": msg.request_id,
        "source": {"address": msg.source.address, "port": msg.source.port, "principal": msg.source.principal},
        "destination": {
            "address": msg.destination.address,
            "port": msg.destination.port,
            "principal": msg.destination.principal,
        },
        "method": msg.method,
        "host": msg.host,
        "path": msg.path,
        "engine": msg.engine,
        "decision_path": msg.decision_path,
        "policy_version": msg.policy_version,
        "outcome": OUTCOME_NAMES.get(msg.outcome, "unspecified"),
        "allowed": msg.allowed,
        "http_status": msg.http_status,
        "dry_run": msg.dry_run,
        "grpc_code": msg.grpc_code,
        "error": msg.error,
        "eval_ns": msg.eval_ns,
    }
    if documents:
        out["input"] = _json_or_none(msg.input_json)
        out["result"] = _json_or_none(msg.result_json)
    for name in ("traceparent", "tracestate", "b3"):
        if getattr(msg, name):
            out[name] = getattr(msg, name)
    return out


def _json_or_none(data: bytes) -> Any:
    if not data:
        return None
    try:
        # The stdlib, not orjson: orjson reads integers beyond 64 bits as (rounded) floats, and what the ledger
        # shows must be what it holds.
        return json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python's limit (a deep body)
        return {"undecodable": data.decode("utf-8", "replace")}
