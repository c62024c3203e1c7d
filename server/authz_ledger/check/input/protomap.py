"""``attributes``: opa-envoy-plugin's protomap walk (``envoyauth/protomap.go``) over any protobuf message.

Only populated fields, keyed by their JSON names; scalars as they are (int64 and uint64 are numbers, enums are
numbers), bytes as standard base64, ``google.protobuf.Struct`` as a plain object whose numbers are float64 as Go
formats them, every other message -- well-known types included -- as an object of its populated fields. This is
not protojson: ``json_format.MessageToDict`` differs from the plugin on enums, int64, Timestamp and Any.
:mod:`authz_ledger.check.input.document` reads the messages every request carries field by field and uses
:func:`protomap` for everything else.
"""

from __future__ import annotations

import base64
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.message import Message  # type: ignore[import-untyped, unused-ignore]

from authz_ledger.record import gojson

_SCALAR, _BYTES, _MESSAGE, _STRUCT = 0, 1, 2, 3
_REPEATED, _MAP = 4, 8  # added to the element kind

_STRUCT_NAME = "google.protobuf.Struct"
_plans: dict[Descriptor, tuple[tuple[int, str, int], ...]] = {}
_field_plan: dict[FieldDescriptor, tuple[str, int]] = {}


def _kind_of(fd: FieldDescriptor) -> int:
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return _BYTES
    message_type = fd.message_type
    if message_type is None:
        return _SCALAR
    # protomap special-cases only messages with AsMap(), i.e. structpb.Struct.
    return _STRUCT if message_type.full_name == _STRUCT_NAME else _MESSAGE


def _plan_for(fd: FieldDescriptor) -> tuple[str, int]:
    plan = _field_plan.get(fd)
    if plan is None:
        mt = fd.message_type
        if mt is not None and mt.GetOptions().map_entry:
            kind = _MAP + _kind_of(mt.fields_by_name["value"])
        elif fd.is_repeated:
            kind = _REPEATED + _kind_of(fd)
        else:
            kind = _kind_of(fd)
        plan = (fd.json_name, kind)
        _field_plan[fd] = plan
    return plan


def b64(value: bytes) -> str:
    # Go's encoding/json marshals []byte as standard, padded base64.
    return base64.b64encode(value).decode("ascii")


def _map_key(key: Any) -> str:
    # protoreflect MapKey.String(): bools print as true/false, integers in decimal.
    if isinstance(key, bool):
        return "true" if key else "false"
    return key if isinstance(key, str) else str(key)


def _convert(kind: int, value: Any) -> Any:
    if kind == _SCALAR:
        return value
    if kind == _MESSAGE:
        return protomap(value)
    if kind == _BYTES:
        return b64(value)
    if kind == _STRUCT:
        return _struct(value)
    if kind >= _MAP:
        inner = kind - _MAP
        if inner == _SCALAR:
            if value and isinstance(next(iter(value)), str):
                return dict(value)
            return {_map_key(k): v for k, v in value.items()}
        return {_map_key(k): _convert(inner, v) for k, v in value.items()}
    inner = kind - _REPEATED
    if inner == _SCALAR:
        return list(value)
    return [_convert(inner, v) for v in value]


def protomap(msg: Message) -> dict[str, Any]:
    """Populated fields of ``msg`` keyed by JSON name, converted as the plugin's protomap does."""
    out: dict[str, Any] = {}
    for fd, value in msg.ListFields():
        plan = _field_plan.get(fd) or _plan_for(fd)
        kind = plan[1]
        out[plan[0]] = value if kind == _SCALAR else _convert(kind, value)
    return out


def _struct_value(v: Any) -> Any:
    which = v.WhichOneof("kind")
    if which == "string_value":
        return v.string_value
    if which == "number_value":
        return gojson.go_float_value(v.number_value)
    if which == "bool_value":
        return v.bool_value
    if which == "struct_value":
        return _struct(v.struct_value)
    if which == "list_value":
        return [_struct_value(x) for x in v.list_value.values]
    return None  # null_value, or no kind set: structpb's AsInterface gives nil for both


def _struct(s: Any) -> dict[str, Any]:
    return {k: _struct_value(v) for k, v in s.fields.items()}
