"""``multipart/form-data`` bodies: Go's ``mime.ParseMediaType`` and ``mime/multipart.Reader`` (with
``net/textproto.ReadMIMEHeader``), over a fully buffered body, with Go's error messages.

The plugin reads a multipart body into ``{form field name: [values]}``: a part whose content-type says JSON is
parsed as JSON, every other part is text; parts without a form-data name are skipped.
"""

from __future__ import annotations

import binascii
import re
from typing import Any

from authz_ledger.check.input.json_body import MULTIPART_JSON_DEPTH, unmarshal_json
from authz_ledger.errors import RequestParseError
from authz_ledger.record.gojson import GO_REPLACE, go_quote

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


def parse_media_type(v: str) -> tuple[str, dict[str, str] | None, str | None]:
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
            prefix = "malformed MIME header initial line: "
            raise RequestParseError(prefix + first.decode("utf-8", GO_REPLACE), raw_from=len(prefix))
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
                prefix = "malformed MIME header line: "
                raise RequestParseError(prefix + line.decode("utf-8", GO_REPLACE), raw_from=len(prefix))
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


def parse_multipart(payload: bytes, boundary: str) -> dict[str, list[Any]]:
    reader = _Multipart(payload, boundary)
    values: dict[str, list[Any]] = {}
    while (headers := reader.next_part()) is not None:
        # Part.FormName: disposition must be form-data; a malformed disposition has no parameters.
        disposition, params, _ = parse_media_type(_first(headers, "content-disposition"))
        name = (params or {}).get("name", "") if disposition == "form-data" else ""
        if not name:
            reader.skip_body()
            continue
        content = reader.read_body()
        if _first(headers, "content-transfer-encoding").lower() == "quoted-printable":
            # NextPart decodes quoted-printable transparently; binascii is more lenient than Go on bad input.
            content = binascii.a2b_qp(content)
        if "application/json" in _first(headers, "content-type"):
            values.setdefault(name, []).append(unmarshal_json(content, MULTIPART_JSON_DEPTH))
        else:
            values.setdefault(name, []).append(content.decode("utf-8", GO_REPLACE))
    return values
