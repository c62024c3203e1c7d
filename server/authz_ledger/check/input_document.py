"""The policy input document built from an Envoy ext_authz v3 ``CheckRequest``, exactly as opa-envoy-plugin
builds it.

Contract (facts from the plugin's ``envoyauth/request.go`` and
``envoyauth/protomap.go``)::

    {"attributes": <the CheckRequest's attributes>,            # protomap, see below
     "version": {"ext_authz": "v3", "encoding": "protojson"},
     "parsed_path": [...], "parsed_query": {k: [v, ...]},
     "parsed_body": <any> | null, "truncated_body": bool,       # absent with skip_request_body_parse
     "source_principal": "spiffe://..."}                        # only when attributes.source.principal != ""

* ``attributes`` is NOT protojson. The plugin walks the message with protoreflect (``protomap``): only
  populated fields, keyed by their JSON names; scalars as they are (int64 and uint64 are numbers, enums are
  numbers), bytes as standard base64, ``google.protobuf.Struct`` as a plain object, every other message --
  well-known types included -- as an object of its populated fields, so ``request.time`` is
  ``{"seconds": s, "nanos": n}``. :func:`_protomap` reproduces that walk; the messages every request
  carries (peers, HTTP request, time) are read field by field, several times faster than
  ``json_format.MessageToDict``, which in any case differs from the plugin on enums, int64, Timestamp and Any.
* ``parsed_path``: the text before the first ``?``, percent-decoded (``+`` stays ``+``), every leading ``/``
  trimmed, split on ``/``. Since the plugin's 2026 security fix ``//admin/people`` keeps ``admin``; since the
  same fix the query is everything after the first ``?``: a ``#...`` is part of the last query value.
* ``parsed_query``: Go's ``url.ParseQuery``: ``&`` separated, ``+`` is a space, a key with ``;`` or a bad
  escape is an error (so are more than 10000 parameters), empty keys are skipped, a key without ``=`` has the
  value ``""``.
* ``parsed_body`` / ``truncated_body``: see :func:`_parse_body`; JSON bodies are read as Go reads them
  (:mod:`authz_ledger.record.gojson`): number text kept as written, invalid UTF-8 and lone surrogates replaced as Go
  replaces them, any depth up to 10,000.
* ``google.protobuf.Struct`` numbers (metadata contexts) are float64 and reach the policy as Go formats them
  (``1e+06``, ``1.5e-07``; :func:`authz_ledger.record.gojson.go_float_text`).

Where the plugin answers ``request_parse_error`` we raise :class:`RequestParseError` whose message is the Go
error text the plugin would print (``invalid character 'n' looking for beginning of object key string``,
``invalid URL escape "%zz"``, ``multipart: NextPart: EOF``...); :mod:`authz_ledger.check.result` adds the
``request_parse_error: `` prefix.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, json_format, message_factory  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.descriptor import Descriptor, FieldDescriptor, ServiceDescriptor  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.descriptor_pool import DescriptorPool  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.message import DecodeError, Message  # type: ignore[import-untyped, unused-ignore]

from authz_ledger.errors import ConfigError, RequestParseError
from authz_ledger.record import gojson
from authz_ledger.record.gojson import GO_REPLACE, go_quote

__all__ = ["build_input", "load_descriptor_set"]

# The same object for every request; callers must not mutate the input document in place (nobody does: it is
# serialised for the policy engine and the ledger).
_VERSION = {"ext_authz": "v3", "encoding": "protojson"}


# --- attributes: the plugin's protomap walk -----------------------------------------------------------------

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


def _b64(value: bytes) -> str:
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
        return _protomap(value)
    if kind == _BYTES:
        return _b64(value)
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


def _protomap(msg: Message) -> dict[str, Any]:
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


# --- parsed_path and parsed_query: Go's url.PathUnescape and url.ParseQuery ---------------------------------

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_MAX_QUERY_PARAMS = 10000  # Go's url.ParseQuery default limit (GODEBUG urlmaxqueryparams), Go >= 1.24.12


def _unescape(text: str, *, query: bool) -> str:
    """Go's url.PathUnescape (``query=False``) or url.QueryUnescape (``query=True``)."""
    if "%" in text:
        bad = _BAD_ESCAPE.search(text)
        if bad is not None:
            # Go quotes at most the three bytes from the bad '%'.
            raise RequestParseError(f"invalid URL escape {go_quote(text[bad.start() :].encode()[:3])}")
        if query:
            text = text.replace("+", " ")
        # Decoded bytes need not be UTF-8 (%FF); Go keeps the bytes and OPA's JSON shows U+FFFD for them.
        return _unquote_to_bytes(text).decode("utf-8", GO_REPLACE)
    if query and "+" in text:
        return text.replace("+", " ")
    return text


def _unquote_to_bytes(text: str) -> bytes:
    raw = text.encode()
    parts = raw.split(b"%")
    out = [parts[0]]
    for part in parts[1:]:
        out.append(bytes((int(part[:2], 16),)))
        out.append(part[2:])
    return b"".join(out)


def _parse_query(query: str) -> dict[str, list[str]]:
    """Go's url.ParseQuery, including its error precedence (any ';' wins over the first bad escape)."""
    if not query:
        return {}
    if query.count("&") + 1 > _MAX_QUERY_PARAMS:
        raise RequestParseError("number of URL query parameters exceeded limit")
    result: dict[str, list[str]] = {}
    error: str | None = None
    semicolon = False
    for pair in query.split("&"):
        if ";" in pair:
            semicolon = True
            continue
        if not pair:
            continue
        key, _, value = pair.partition("=")
        try:
            key = _unescape(key, query=True)
            value = _unescape(value, query=True)
        except RequestParseError as exc:
            if error is None:
                error = str(exc)
            continue
        values = result.get(key)
        if values is None:
            result[key] = [value]
        else:
            values.append(value)
    if semicolon:
        raise RequestParseError("invalid semicolon separator in query")
    if error is not None:
        raise RequestParseError(error)
    return result


def _parse_path_and_query(path: str) -> tuple[list[str], dict[str, list[str]]]:
    raw_path, _, raw_query = path.partition("?")
    decoded = _unescape(raw_path, query=False) if "%" in raw_path else raw_path
    return decoded.lstrip("/").split("/"), _parse_query(raw_query)


# --- JSON bodies: OPA's util.UnmarshalJSON (see authz_ledger.record.gojson) ---------------------------------------


# The engines read the input document as JSON text inside their request (``{"input": document}``) with the same
# decoder, whose 10,000-level limit counts those two levels too. A body nested deeper than what is left could
# never reach the policy: it is refused here, as a deny, rather than failing in the engine -- an engine error
# would leave the answer to Envoy's failure_mode_allow. (The plugin evaluates bodies of 9,999 and 10,000
# levels; no request Envoy forwards from a real client is nested that deep.)
_BODY_DEPTH = gojson.MAX_DEPTH - 2
_MULTIPART_JSON_DEPTH = _BODY_DEPTH - 2  # parsed_body -> form field -> list of values -> the part's JSON


def _unmarshal_json(data: str | bytes, max_depth: int = _BODY_DEPTH) -> Any:
    try:
        return gojson.unmarshal(data, max_depth=max_depth)
    except gojson.GoJSONError as e:
        raise RequestParseError(str(e)) from None


# --- Bodies -------------------------------------------------------------------------------------------------


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


def _parse_body(
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
        return _unmarshal_json(data), False
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
        return _parse_query(payload.decode("utf-8", GO_REPLACE)), False
    if "multipart/form-data" in content_type:
        payload = _payload(body, raw_body)
        if payload is None:
            return None, False
        content_length = headers.get("content-length")
        if content_length is not None and _check_truncated(content_length, len(payload)):
            return None, True
        _, params, error = _parse_media_type(content_type)
        if error is not None:
            raise RequestParseError(error)
        assert params is not None  # no error means params were parsed
        boundary = params.get("boundary")
        if boundary is None:
            return None, False
        return _parse_multipart(payload, boundary), False
    return None, False


# --- multipart/form-data: Go's mime.ParseMediaType and mime/multipart.Reader --------------------------------

_TSPECIALS = frozenset('()<>@,;:\\"/[]?=')


def _is_token_char(ch: str) -> bool:
    return " " < ch < "\x7f" and ch not in _TSPECIALS


def _consume_token(v: str) -> tuple[str, str]:
    for i, ch in enumerate(v):
        if not _is_token_char(ch):
            return v[:i], v[i:]
    return v, ""


def _consume_value(v: str) -> tuple[str, str]:
    if not v:
        return "", v
    if v[0] != '"':
        return _consume_token(v)
    out: list[str] = []
    i = 1
    while i < len(v):
        ch = v[i]
        if ch == '"':
            return "".join(out), v[i + 1 :]
        # Go takes a backslash literally unless it escapes a tspecial (MSIE file paths).
        if ch == "\\" and i + 1 < len(v) and v[i + 1] in _TSPECIALS:
            out.append(v[i + 1])
            i += 2
            continue
        if ch in "\r\n":
            return "", v
        out.append(ch)
        i += 1
    return "", v


def _consume_param(v: str) -> tuple[str, str, str]:
    rest = v.lstrip()
    if not rest.startswith(";"):
        return "", "", v
    rest = rest[1:].lstrip()
    key, rest = _consume_token(rest)
    key = key.lower()
    if not key:
        return "", "", v
    rest = rest.lstrip()
    if not rest.startswith("="):
        return "", "", v
    rest = rest[1:].lstrip()
    value, rest2 = _consume_value(rest)
    if not value and rest2 == rest:
        return "", "", v
    return key, value, rest2


def _check_media_type(mediatype: str) -> str | None:
    typ, rest = _consume_token(mediatype)
    if not typ:
        return "mime: no media type"
    if not rest:
        return None
    if not rest.startswith("/"):
        return "mime: expected slash after first token"
    subtype, rest = _consume_token(rest[1:])
    if not subtype:
        return "mime: expected token after slash"
    if rest:
        return "mime: unexpected content after media subtype"
    return None


def _parse_media_type(v: str) -> tuple[str, dict[str, str] | None, str | None]:
    """Go's mime.ParseMediaType: ``(mediatype, params, error)``; RFC 2231 ``key*`` parameters are ignored."""
    base = v.split(";", 1)[0]
    mediatype = base.lower().strip()
    error = _check_media_type(mediatype)
    if error is not None:
        return "", None, error
    params: dict[str, str] = {}
    v = v[len(base) :]
    while v:
        v = v.lstrip()
        if not v:
            break
        key, value, rest = _consume_param(v)
        if not key:
            if rest.strip() == ";":
                break  # a trailing semicolon is tolerated
            return mediatype, None, "mime: invalid media parameter"
        if "*" not in key:
            if key in params and params[key] != value:
                return "", None, "mime: duplicate parameter name"
            params[key] = value
        v = rest
    return mediatype, params, None


_LWSP = b" \t"
_READ_BUFFER = 4096  # multipart.Reader's bufio buffer: a line longer than this is an error
_HEADER_VALUE_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_HEADER_KEY = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class _Multipart:
    """Go's mime/multipart.Reader over a fully buffered body, with Go's error messages."""

    def __init__(self, data: bytes, boundary: str) -> None:
        self.data = data
        self.pos = 0
        self.dash = b"--" + boundary.encode()
        self.dash_dash = self.dash + b"--"
        self.nl = b"\r\n"
        self.parts_read = 0

    def _read_slice(self) -> tuple[bytes, bool]:
        """bufio ReadSlice('\\n'): (line, at_eof)."""
        data, pos = self.data, self.pos
        end = data.find(b"\n", pos, pos + _READ_BUFFER)
        if end < 0:
            if len(data) - pos >= _READ_BUFFER:
                raise RequestParseError("multipart: NextPart: bufio: buffer full")
            self.pos = len(data)
            return data[pos:], True
        self.pos = end + 1
        return data[pos : end + 1], False

    def _is_final(self, line: bytes) -> bool:
        if not line.startswith(self.dash_dash):
            return False
        rest = line[len(self.dash_dash) :].lstrip(_LWSP)
        return not rest or rest == self.nl

    def _is_delimiter(self, line: bytes) -> bool:
        if not line.startswith(self.dash):
            return False
        rest = line[len(self.dash) :].lstrip(_LWSP)
        if self.parts_read == 0 and rest == b"\n":
            self.nl = b"\n"  # the first delimiter line decides: bare-LF bodies occur in practice
        return rest == self.nl

    def next_part(self) -> dict[str, list[str]] | None:
        """Advance to the next part; its headers (lower-case keys), or None at the final boundary."""
        if self.dash == b"--":
            raise RequestParseError("multipart: boundary is empty")
        expect_new_part = False
        while True:
            line, eof = self._read_slice()
            if eof and self._is_final(line):
                return None
            if eof:
                raise RequestParseError("multipart: NextPart: EOF")
            if self._is_delimiter(line):
                self.parts_read += 1
                return self._read_headers()
            if self._is_final(line):
                return None
            if expect_new_part:
                raise RequestParseError(f"multipart: expecting a new Part; got line {go_quote(line)}")
            if self.parts_read == 0:
                continue  # preamble
            if line == self.nl:
                expect_new_part = True
                continue
            raise RequestParseError(f"multipart: unexpected line in Next(): {go_quote(line)}")

    def _read_line(self) -> bytes | None:
        data, pos = self.data, self.pos
        if pos >= len(data):
            return None
        end = data.find(b"\n", pos)
        if end < 0:
            self.pos = len(data)
            return data[pos:]
        self.pos = end + 1
        line = data[pos:end]
        return line[:-1] if line.endswith(b"\r") else line

    def _read_headers(self) -> dict[str, list[str]]:
        """net/textproto ReadMIMEHeader."""
        headers: dict[str, list[str]] = {}
        if self.data[self.pos : self.pos + 1] in (b" ", b"\t"):
            first = self._read_line() or b""
            raise RequestParseError("malformed MIME header initial line: " + first.decode("utf-8", GO_REPLACE))
        while True:
            line = self._read_line()
            if line is None:
                raise RequestParseError("EOF")
            if not line:
                return headers
            if b":" not in line:
                raise RequestParseError(f"malformed MIME header: missing colon: {go_quote(line)}")
            # Continuation lines (leading space or tab) are folded into this one.
            line = line.strip(_LWSP)
            while self.data[self.pos : self.pos + 1] in (b" ", b"\t"):
                more = self._read_line()
                if more is None:
                    break
                line += b" " + more.strip(_LWSP)
            key, _, value = line.partition(b":")
            if _HEADER_KEY.fullmatch(key) is None or _HEADER_VALUE_BAD.search(value) is not None:
                raise RequestParseError("malformed MIME header line: " + line.decode("utf-8", GO_REPLACE))
            name = key.decode("ascii").lower()
            headers.setdefault(name, []).append(value.lstrip(_LWSP).decode("utf-8", GO_REPLACE))

    def _match_after(self, at: int) -> bool:
        """matchAfterPrefix on a complete buffer: does a boundary really start here?"""
        data, n = self.data, len(self.data)
        if at == n:
            return True
        c = data[at]
        if c in b" \t\r\n":
            return True
        return c == 0x2D and at + 1 < n and data[at + 1] == 0x2D

    def read_body(self) -> bytes:
        """The part's content up to the next boundary; Go's partReader fails with io.ErrUnexpectedEOF."""
        data, start = self.data, self.pos
        if data.startswith(self.dash, start) and self._match_after(start + len(self.dash)):
            return b""
        nl_dash = self.nl + self.dash
        at = data.find(nl_dash, start)
        while at >= 0 and not self._match_after(at + len(nl_dash)):
            at = data.find(nl_dash, at + len(nl_dash))
        if at < 0:
            self.pos = len(data)
            raise RequestParseError("unexpected EOF")
        self.pos = at
        return data[start:at]

    def skip_body(self) -> None:
        # Part.Close drains the part and ignores errors; a missing boundary surfaces in the next NextPart.
        try:
            self.read_body()
        except RequestParseError:
            self.pos = len(self.data)


def _first(headers: dict[str, list[str]], name: str) -> str:
    values = headers.get(name)
    return values[0] if values else ""


def _parse_multipart(payload: bytes, boundary: str) -> dict[str, list[Any]]:
    reader = _Multipart(payload, boundary)
    values: dict[str, list[Any]] = {}
    while (headers := reader.next_part()) is not None:
        # Part.FormName: disposition must be form-data; a malformed disposition has no parameters.
        disposition, params, _ = _parse_media_type(_first(headers, "content-disposition"))
        name = (params or {}).get("name", "") if disposition == "form-data" else ""
        if not name:
            reader.skip_body()
            continue
        content = reader.read_body()
        if _first(headers, "content-transfer-encoding").lower() == "quoted-printable":
            # NextPart decodes quoted-printable transparently; binascii is more lenient than Go on bad input.
            content = binascii.a2b_qp(content)
        if "application/json" in _first(headers, "content-type"):
            values.setdefault(name, []).append(_unmarshal_json(content, _MULTIPART_JSON_DEPTH))
        else:
            values.setdefault(name, []).append(content.decode("utf-8", GO_REPLACE))
    return values


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


# --- The document -------------------------------------------------------------------------------------------
#
# Hand-written walks of the messages every CheckRequest carries. Each gives exactly what _protomap gives
# (the tests compare both on generated requests); they exist because upb's ListFields and ScalarMap
# conversions cost more than reading the few fields directly. They are used only while the messages have
# exactly the fields written for here: a newer xds-protos that adds a field falls back to the generic walk.

_EMPTY: dict[str, Any] = {}

_KNOWN_FIELDS = {
    "envoy.service.auth.v3.CheckRequest": {"attributes"},
    "envoy.service.auth.v3.AttributeContext": {
        "source",
        "destination",
        "request",
        "context_extensions",
        "metadata_context",
        "route_metadata_context",
        "tls_session",
    },
    "envoy.service.auth.v3.AttributeContext.Peer": {
        "address",
        "service",
        "labels",
        "principal",
        "certificate",
    },
    "envoy.service.auth.v3.AttributeContext.Request": {"time", "http"},
    "envoy.service.auth.v3.AttributeContext.HttpRequest": {
        "id",
        "method",
        "headers",
        "header_map",
        "path",
        "host",
        "scheme",
        "query",
        "fragment",
        "size",
        "protocol",
        "body",
        "raw_body",
    },
    "envoy.config.core.v3.Address": {"socket_address", "pipe", "envoy_internal_address"},
    "envoy.config.core.v3.SocketAddress": {
        "protocol",
        "address",
        "port_value",
        "named_port",
        "resolver_name",
        "ipv4_compat",
        "network_namespace_filepath",
    },
    "google.protobuf.Timestamp": {"seconds", "nanos"},
}


def _fast_path_matches(pool: DescriptorPool) -> bool:
    try:
        return all(
            set(pool.FindMessageTypeByName(name).fields_by_name) == fields for name, fields in _KNOWN_FIELDS.items()
        )
    except KeyError:
        return False


def _string_map(m: Any) -> dict[str, str]:
    # A comprehension over the keys is about 3x faster than dict() on a upb ScalarMap.
    return {k: m[k] for k in m}


def _socket_address(sa: Any) -> dict[str, Any]:
    # Each field is read once: every read of a upb string field builds a new Python str.
    out: dict[str, Any] = {}
    if protocol := sa.protocol:
        out["protocol"] = protocol  # enums are numbers in the plugin's input
    if address := sa.address:
        out["address"] = address
    port = sa.WhichOneof("port_specifier")
    if port == "port_value":
        out["portValue"] = sa.port_value
    elif port == "named_port":
        out["namedPort"] = sa.named_port
    if resolver_name := sa.resolver_name:
        out["resolverName"] = resolver_name
    if sa.ipv4_compat:
        out["ipv4Compat"] = True
    if namespace := sa.network_namespace_filepath:
        out["networkNamespaceFilepath"] = namespace
    return out


def _peer(peer: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if peer.HasField("address"):
        address = peer.address
        if address.WhichOneof("address") == "socket_address":
            out["address"] = {"socketAddress": _socket_address(address.socket_address)}
        else:
            out["address"] = _protomap(address)
    if service := peer.service:
        out["service"] = service
    labels = peer.labels
    if len(labels):
        out["labels"] = _string_map(labels)
    if principal := peer.principal:
        out["principal"] = principal
    if certificate := peer.certificate:
        out["certificate"] = certificate
    return out


# HttpRequest fields whose JSON name is their proto name and whose value goes in as read, in the plugin's order.
_HTTP_PLAIN_FIELDS = ("path", "host", "scheme", "query", "fragment", "size", "protocol", "body")


def _http_request(h: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if id_ := h.id:
        out["id"] = id_
    if method := h.method:
        out["method"] = method
    headers = h.headers
    if len(headers):
        out["headers"] = _string_map(headers)
    if h.HasField("header_map"):
        out["headerMap"] = _protomap(h.header_map)
    for field in _HTTP_PLAIN_FIELDS:
        if value := getattr(h, field):
            out[field] = value
    if raw := h.raw_body:
        out["rawBody"] = _b64(raw)
    return out


def _attributes(a: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if a.HasField("source"):
        out["source"] = _peer(a.source)
    if a.HasField("destination"):
        out["destination"] = _peer(a.destination)
    if a.HasField("request"):
        request = a.request
        req: dict[str, Any] = {}
        if request.HasField("time"):
            t = request.time
            ts: dict[str, int] = {}
            if t.seconds:
                ts["seconds"] = t.seconds
            if t.nanos:
                ts["nanos"] = t.nanos
            req["time"] = ts
        if request.HasField("http"):
            req["http"] = _http_request(request.http)
        out["request"] = req
    if len(a.context_extensions):
        out["contextExtensions"] = _string_map(a.context_extensions)
    # Rare and open-ended (Struct, Any, TLS details): the generic walk.
    if a.HasField("metadata_context"):
        out["metadataContext"] = _protomap(a.metadata_context)
    if a.HasField("route_metadata_context"):
        out["routeMetadataContext"] = _protomap(a.route_metadata_context)
    if a.HasField("tls_session"):
        out["tlsSession"] = _protomap(a.tls_session)
    return out


def _attributes_document(request: Any) -> dict[str, Any]:
    """``{"attributes": ...}`` -- the plugin's protomap of the whole CheckRequest."""
    if not _FAST_PATH:
        return _protomap(request)
    if not request.HasField("attributes"):
        return {}
    return {"attributes": _attributes(request.attributes)}


_FAST_PATH = False  # set by _enable_fast_path() once the Envoy descriptors are known to match


def _enable_fast_path() -> None:
    global _FAST_PATH  # noqa: PLW0603 -- one flag, decided once at import
    from envoy.service.auth.v3 import external_auth_pb2

    _FAST_PATH = _fast_path_matches(external_auth_pb2.DESCRIPTOR.pool)


_enable_fast_path()


def build_input(
    request: Any,
    *,
    skip_request_body_parse: bool = False,
    descriptor_pool: DescriptorPool | None = None,
) -> dict[str, Any]:
    """The input document opa-envoy-plugin gives the policy for this ``CheckRequest``.

    ``request`` is an ``envoy.service.auth.v3.CheckRequest``; ``descriptor_pool`` (see
    :func:`load_descriptor_set`) enables parsing gRPC request bodies. Raises RequestParseError where the
    plugin answers ``request_parse_error``.
    """
    document = _attributes_document(request)
    document["version"] = _VERSION

    attributes = document.get("attributes", _EMPTY)
    http = attributes.get("request", _EMPTY).get("http", _EMPTY)

    parsed_path, parsed_query = _parse_path_and_query(http.get("path", ""))
    document["parsed_path"] = parsed_path
    document["parsed_query"] = parsed_query

    if not skip_request_body_parse:
        raw_body = request.attributes.request.http.raw_body if "rawBody" in http else b""
        parsed_body, truncated = _parse_body(
            http.get("headers", _EMPTY), http.get("body", ""), raw_body, parsed_path, descriptor_pool
        )
        document["parsed_body"] = parsed_body
        document["truncated_body"] = truncated

    # Since plugin v1.x (July 2025, PR #732): the SPIFFE ID under Istio mTLS, without digging into attributes.
    principal = attributes.get("source", _EMPTY).get("principal")
    if principal:
        document["source_principal"] = principal
    return document
