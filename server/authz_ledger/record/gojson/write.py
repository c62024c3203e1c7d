"""JSON as Go writes it for OPA: compact and canonical text with number text kept, and Go's text for values.

* :func:`compact` and :func:`canonical` write what :mod:`authz_ledger.record.gojson.read` parsed (and every
  document this service builds) with each :data:`number` verbatim, at any depth.
* Go's text for values: ``strconv.Quote`` (:func:`go_quote`, for Go's error messages), and protobuf ``Struct``
  numbers (float64), which reach the policy as OPA's ``FloatNumberTerm`` text: :func:`go_float_text`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any

import orjson

number = orjson.Fragment
"""A JSON number held as its text (``number("2.50")``): written verbatim by :func:`compact`."""


# --- Go's text for values -----------------------------------------------------------------------------------

_SIMPLE_ESCAPES = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v"}


def quote_rune(ch: str) -> str:
    """One character as Go's ``strconv.Quote`` writes it (without the quotes)."""
    if ch == '"':
        return '\\"'
    if ch == "\\":
        return "\\\\"
    cp = ord(ch)
    # str.isprintable is close to Go's strconv.IsPrint: letters, marks, numbers, punctuation, symbols, U+0020.
    if ch.isprintable():
        return ch
    if cp in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[cp]
    if cp < 0x20 or cp == 0x7F:
        return f"\\x{cp:02x}"
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def go_quote(data: bytes) -> str:
    """Go's ``strconv.Quote`` (also what ``%q`` prints for a string or []byte)."""
    out = ['"']
    for ch in data.decode("utf-8", "surrogateescape"):
        cp = ord(ch)
        if 0xDC80 <= cp <= 0xDCFF:  # an invalid UTF-8 byte, kept by surrogateescape
            out.append(f"\\x{cp - 0xDC00:02x}")
        else:
            out.append(quote_rune(ch))
    out.append('"')
    return "".join(out)


def go_float_text(value: float) -> str:
    """``strconv.FormatFloat(value, 'g', -1, 64)``: how OPA writes a float64 (``ast.FloatNumberTerm``).

    The shortest digits that round-trip (Python's repr finds the same ones), then Go's %g rule for the shortest
    precision: exponent form when the decimal exponent is < -4 or >= 6 (``1e+06``, ``1.5e-07``,
    ``9.007199254740992e+15``), plain otherwise (``123456.789``, ``0.0001``, ``3``); the exponent has a sign
    and at least two digits. Python's repr uses the same exponent form below 1e-4 and from 1e16 on, so only the
    band in between is rewritten. Non-finite values have no JSON text; see :func:`go_float_value`.
    """
    text = repr(value)
    if "e" in text:
        return text
    if -1e6 < value < 1e6:
        return text[:-2] if text.endswith(".0") else text
    # 1e6 <= |value| < 1e16: Python writes it plainly, Go in exponent form.
    sign = "-" if value < 0 else ""
    whole, _, fraction = text.lstrip("-").partition(".")
    digits = (whole + fraction).rstrip("0")
    exponent = len(whole) - 1
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mantissa}e+{exponent:02d}"


def go_float_value(value: float) -> Any:
    """A float64 as the policy sees it: an ``int`` where Go's text is a plain integer (orjson writes it the same),
    else a :data:`number` of Go's text. NaN and infinities, which a binary protobuf Struct can carry but JSON
    cannot, become ``null``. The branches are :func:`go_float_text` unrolled: this runs for every number of
    Envoy's metadata (JWT claims), on the Check path."""
    if -1e6 < value < 1e6:
        if value.is_integer():
            return int(value) if value or math.copysign(1.0, value) > 0 else _MINUS_ZERO
        if value >= 1e-4 or value <= -1e-4:
            return value  # orjson writes these plainly with the shortest digits, as Go does ("2.5")
        return number(repr(value))  # below 1e-4 Python's repr has Go's exponent form ("1.5e-07")
    if not math.isfinite(value):
        return None
    return number(go_float_text(value))


_MINUS_ZERO = number("-0")


# --- Writing ------------------------------------------------------------------------------------------------


def compact(value: Any) -> bytes:
    """Compact UTF-8 JSON with number text kept. orjson is ~10x faster than the stdlib on the Check path;
    :func:`_write` takes what orjson refuses (documents nested deeper than its 255 levels, integers beyond 64
    bits) and never raises for a document this service built."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return _write(value, sort_keys=False, ensure_ascii=False).encode("utf-8", "surrogatepass")


def canonical(value: Any) -> str:
    """Sorted keys, ASCII only, compact: the stdlib's ``json.dumps(value, sort_keys=True, separators=(",", ":"))``
    with number text kept, at any depth (the text a body digest is computed over)."""
    return _write(value, sort_keys=True, ensure_ascii=True)


def _scalar(value: Any, quote: Any) -> str:
    if isinstance(value, str):
        return str(quote(value))
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, number):
        return orjson.dumps(value).decode()
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return float.__repr__(value) if math.isfinite(value) else "null"
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _write(value: Any, *, sort_keys: bool, ensure_ascii: bool) -> str:
    """JSON text without recursion: a stack of the open containers, each an iterator of what is left to write."""
    quote = encode_basestring_ascii if ensure_ascii else encode_basestring
    out: list[str] = []
    stack: list[tuple[Iterator[Any], bool]] = []  # (items left, is an object)
    item: Any = value
    while True:
        if isinstance(item, dict) and item:
            pairs = [(k if isinstance(k, str) else str(k), v) for k, v in item.items()]
            if sort_keys:
                pairs.sort(key=lambda kv: kv[0])
            key, item = pairs[0]
            out += ("{", quote(key), ":")
            stack.append((iter(pairs[1:]), True))
            continue
        if isinstance(item, list | tuple) and item:
            out.append("[")
            stack.append((iter(item[1:]), False))
            item = item[0]
            continue
        if isinstance(item, dict):
            out.append("{}")
        elif isinstance(item, list | tuple):
            out.append("[]")
        else:
            out.append(_scalar(item, quote))
        # The value is written: find the next one, closing every container that has nothing left.
        while stack:
            items, is_object = stack[-1]
            nxt: Any = next(items, _END)
            if nxt is _END:
                stack.pop()
                out.append("}" if is_object else "]")
                continue
            if is_object:
                out += (",", quote(nxt[0]), ":")
                item = nxt[1]
            else:
                out.append(",")
                item = nxt
            break
        else:
            return "".join(out)


_END = object()
