from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_ALLOW: _ClassVar[Outcome]
    OUTCOME_DENY: _ClassVar[Outcome]
    OUTCOME_ERROR: _ClassVar[Outcome]
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_ALLOW: Outcome
OUTCOME_DENY: Outcome
OUTCOME_ERROR: Outcome

class Address(_message.Message):
    __slots__ = ("address", "port", "principal")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    address: str
    port: int
    principal: str
    def __init__(self, address: _Optional[str] = ..., port: _Optional[int] = ..., principal: _Optional[str] = ...) -> None: ...

class LedgerEntry(_message.Message):
    __slots__ = ("sequence", "schema", "time_unix_nano", "decision_id", "request_id", "source", "destination", "method", "host", "path", "input_json", "engine", "decision_path", "policy_version", "result_json", "outcome", "allowed", "http_status", "dry_run", "grpc_code", "error", "eval_ns", "traceparent", "tracestate", "b3")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    DECISION_PATH_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    GRPC_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EVAL_NS_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    TRACESTATE_FIELD_NUMBER: _ClassVar[int]
    B3_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    schema: int
    time_unix_nano: int
    decision_id: str
    request_id: str
    source: Address
    destination: Address
    method: str
    host: str
    path: str
    input_json: bytes
    engine: str
    decision_path: str
    policy_version: str
    result_json: bytes
    outcome: Outcome
    allowed: bool
    http_status: int
    dry_run: bool
    grpc_code: int
    error: str
    eval_ns: int
    traceparent: str
    tracestate: str
    b3: str
    def __init__(self, sequence: _Optional[int] = ..., schema: _Optional[int] = ..., time_unix_nano: _Optional[int] = ..., decision_id: _Optional[str] = ..., request_id: _Optional[str] = ..., source: _Optional[_Union[Address, _Mapping]] = ..., destination: _Optional[_Union[Address, _Mapping]] = ..., method: _Optional[str] = ..., host: _Optional[str] = ..., path: _Optional[str] = ..., input_json: _Optional[bytes] = ..., engine: _Optional[str] = ..., decision_path: _Optional[str] = ..., policy_version: _Optional[str] = ..., result_json: _Optional[bytes] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., allowed: _Optional[bool] = ..., http_status: _Optional[int] = ..., dry_run: _Optional[bool] = ..., grpc_code: _Optional[int] = ..., error: _Optional[str] = ..., eval_ns: _Optional[int] = ..., traceparent: _Optional[str] = ..., tracestate: _Optional[str] = ..., b3: _Optional[str] = ...) -> None: ...
