"""``parsed_path``, ``parsed_query`` and form bodies: Go's ``net/url`` -- ``url.PathUnescape``,
``url.QueryUnescape`` and ``url.ParseQuery`` -- with Go's error precedence and error text (``invalid URL escape
"%zz"``, ``invalid semicolon separator in query``, more than 10000 parameters).
"""

from __future__ import annotations

import re

from authz_ledger.errors import RequestParseError
from authz_ledger.record.gojson import GO_REPLACE, go_quote

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


def parse_query(query: str) -> dict[str, list[str]]:
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


def parse_path_and_query(path: str) -> tuple[list[str], dict[str, list[str]]]:
    raw_path, _, raw_query = path.partition("?")
    decoded = _unescape(raw_path, query=False) if "%" in raw_path else raw_path
    return decoded.lstrip("/").split("/"), parse_query(raw_query)
