"""``parsed_body`` and ``truncated_body``: the plugin's getParsedBody (``envoyauth/request.go``).

It dispatches on the content type (JSON, gRPC, form, multipart; anything else is not parsed), compares the body
with its content-length as checkIfHTTPBodyTruncated does (``strconv.ParseInt`` errors included), and decodes the
first message of a gRPC body as getGRPCBody does, with the message types of a descriptor set (the plugin's
``proto-descriptor`` option, :func:`load_descriptor_set`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, json_format, message_factory  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.descriptor import ServiceDescriptor  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.descriptor_pool import DescriptorPool  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.message import DecodeError, Message  # type: ignore[import-untyped, unused-ignore]

from authz_ledger.check.input.gourl import parse_query
from authz_ledger.check.input.json_body import unmarshal_json
from authz_ledger.check.input.multipart import parse_media_type, parse_multipart
from authz_ledger.errors import ConfigError, RequestParseError
from authz_ledger.record.gojson import GO_REPLACE, go_quote


def _byte_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def _check_truncated(content_length: str, body_length: int) -> bool:
    """The plugin's checkIfHTTPBodyTruncated, with strconv.ParseInt(s, 10, 64)'s errors."""
    if re.fullmatch(r"[+-]?[0-9]+", content_length, re.ASCII) is None:
        raise RequestParseError(f"strconv.ParseInt: parsing {go_quote(content_length.encode())}: invalid syntax")
    declared = int(content_length)
    if not -(2**63) <= declared < 2**63:
        raise RequestParseError(f"strconv.ParseInt: parsing {go_quote(content_length.encode())}: value out of range")
    return declared != -1 and declared > body_length


def _payload(body: str, raw_body: bytes) -> bytes | None:
    if body:
        return body.encode()
    return raw_body or None


def parse_body(
    headers: dict[str, str],
    body: str,
    raw_body: bytes,
    parsed_path: list[str],
    pool: DescriptorPool | None,
) -> tuple[Any, bool]:
    """``(parsed_body, truncated_body)`` as the plugin's getParsedBody computes them.

    The content-type tests are substring tests, in the plugin's order: application/json, application/grpc,
    application/x-www-form-urlencoded, multipart/form-data; anything else is not parsed.
    """
    # Envoy sets this when it cut the body at max_request_bytes (plugin PR #809, 2026): never parse a partial
    # body, whatever its type.
    if headers.get("x-envoy-auth-partial-body") == "true":
        return None, True
    content_type = headers.get("content-type")
    if content_type is None:
        return None, False
    if "application/json" in content_type:
        data: str | bytes
        if body:
            data, length = body, _byte_len(body)
        elif raw_body:  # Envoy with pack_as_bytes: true
            data, length = raw_body, len(raw_body)
        else:
            return None, False
        content_length = headers.get("content-length")
        if content_length is not None and _check_truncated(content_length, length):
            return None, True
        return unmarshal_json(data), False
    if "application/grpc" in content_type:
        if pool is None or not raw_body:
            return None, False
        if len(parsed_path) != 2:  # a gRPC call is POST /package.Service/Method
            raise RequestParseError("invalid parsed path")
        return _parse_grpc(raw_body, parsed_path, pool)
    if "application/x-www-form-urlencoded" in content_type:
        payload = _payload(body, raw_body)
        if payload is None:
            return None, False
        content_length = headers.get("content-length")
        if content_length is not None and _check_truncated(content_length, len(payload)):
            return None, True
        return parse_query(payload.decode("utf-8", GO_REPLACE)), False
    if "multipart/form-data" in content_type:
        payload = _payload(body, raw_body)
        if payload is None:
            return None, False
        content_length = headers.get("content-length")
        if content_length is not None and _check_truncated(content_length, len(payload)):
            return None, True
        _, params, error = parse_media_type(content_type)
        if error is not None:
            raise RequestParseError(error)
        assert params is not None  # no error means params were parsed
        boundary = params.get("boundary")
        if boundary is None:
            return None, False
        return parse_multipart(payload, boundary), False
    return None, False


# --- application/grpc with a descriptor set -----------------------------------------------------------------

_grpc_classes: dict[tuple[DescriptorPool, str, str], type[Message] | None] = {}


def _grpc_input_class(pool: DescriptorPool, service: str, method: str) -> type[Message] | None:
    key = (pool, service, method)
    if key in _grpc_classes:
        return _grpc_classes[key]
    cls: type[Message] | None = None
    svc: ServiceDescriptor | None
    try:
        svc = pool.FindServiceByName(service)
    except KeyError:
        svc = None
    if svc is not None:
        md = svc.methods_by_name.get(method)
        # The plugin skips client-streaming methods (several messages, no single document).
        if md is not None and not md.client_streaming:
            cls = message_factory.GetMessageClass(md.input_type)
    if len(_grpc_classes) < 4096:  # bounded: the key comes from the request path
        _grpc_classes[key] = cls
    return cls


def _parse_grpc(raw: bytes, parsed_path: list[str], pool: DescriptorPool) -> tuple[Any, bool]:
    """First message of a gRPC request body as protojson, like the plugin's getGRPCBody."""
    if len(raw) < 5:
        raise RequestParseError("less than 5 bytes")
    if raw[0] != 0:
        return None, False  # compressed: the plugin does not decompress
    size = int.from_bytes(raw[1:5], "big")
    if size > len(raw) - 5:
        return None, True
    cls = _grpc_input_class(pool, parsed_path[0], parsed_path[1])
    if cls is None:
        return None, False  # unknown service or method: not parsed, not an error
    msg = cls()
    try:
        msg.ParseFromString(raw[5 : 5 + size])
    except DecodeError:
        raise RequestParseError("proto: cannot parse invalid wire-format data") from None
    try:
        return json_format.MessageToDict(msg), False
    except (TypeError, ValueError, KeyError) as exc:
        raise RequestParseError(f"proto: {exc}") from None


def load_descriptor_set(path: str | Path) -> DescriptorPool:
    """A pool holding every file of a serialized FileDescriptorSet (``protoc --include_imports -o``).

    The plugin's ``proto-descriptor`` option; its files may come in any order. Raises ConfigError.
    """
    try:
        fds = descriptor_pb2.FileDescriptorSet.FromString(Path(path).read_bytes())
    except (OSError, DecodeError) as exc:
        raise ConfigError(f"cannot read descriptor set {path}: {exc}") from exc
    pool = DescriptorPool()
    pending = {f.name: f for f in fds.file}
    added: set[str] = set()

    def add(name: str, trail: tuple[str, ...]) -> None:
        if name in added:
            return
        if name in trail:
            raise ConfigError(f"descriptor set {path}: import cycle through {name}")
        proto = pending.get(name)
        if proto is None:
            raise ConfigError(f"descriptor set {path}: {trail[-1]} imports {name}, which is not in the set")
        for dep in proto.dependency:
            add(dep, (*trail, name))
        try:
            pool.Add(proto)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"descriptor set {path}: {name}: {exc}") from exc
        added.add(name)

    for name in pending:
        add(name, ())
    return pool
