"""JSON as Go reads it for OPA: the body parser, number text and string rules of opa-envoy-plugin.

The plugin parses an ``application/json`` body with OPA's ``util.UnmarshalJSON`` -- encoding/json's Decoder with
``UseNumber``, then a ``Token()`` call that rejects trailing data -- and hands the value to the policy as an AST
without writing it out again. What that keeps, this module keeps:

* **Number text.** A ``json.Number`` is the literal as written and OPA's ``ast.Number`` keeps it, so ``1E2``,
  ``2.50``, ``-0`` and ``1e400`` reach ``json.marshal``, ``sprintf``, string comparisons and the recorded input
  unchanged, and no number is out of range (a body can never make the Check fail). Numbers are held as
  ``orjson.Fragment(text)``, which orjson writes verbatim and Python code cannot mistake for a float.
* **Strings.** Invalid UTF-8 bytes become U+FFFD one byte at a time (``utf8.DecodeRune`` returns a width-1
  ``RuneError``), and a ``\\u`` escape of a surrogate that does not pair with the escape after it becomes one
  U+FFFD (encoding/json ``unquote``).
* **Depth.** Nesting up to encoding/json's ``maxNestingDepth`` (10,000) is accepted, deeper is refused.
* **Trailing data.** After the first value only whitespace, or a ``null`` token (``Token()`` returns nil, nil and
  OPA's check lets it pass).

Python's C JSON scanner does the common case; the error path and documents nested deeper than Python's
recursion limit go through :class:`_GoParser`, which reproduces encoding/json's error messages. Writing the
value back out (number text kept) is :mod:`authz_ledger.record.gojson.write`.
"""

from __future__ import annotations

import codecs
import json
import re
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

from authz_ledger.record.gojson.write import number, quote_rune

MAX_DEPTH = 10000  # encoding/json maxNestingDepth

GO_REPLACE = "authz-ledger-go-replace"
"""Decode error handler: one U+FFFD per invalid byte, as Go's utf8.DecodeRune (Python's "replace" gives one per
maximal invalid subsequence: b"\\xe2\\x82" is one U+FFFD there and two in Go)."""


def _replace_one_byte(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return "\ufffd", error.start + 1


codecs.register_error(GO_REPLACE, _replace_one_byte)


class GoJSONError(ValueError):
    """A body encoding/json refuses; the message is Go's error text."""


# --- Reading ------------------------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN/Infinity; Go's does not. The message comes from _GoParser.
    raise ValueError(name)


_FAST = json.JSONDecoder(parse_float=number, parse_int=number, parse_constant=_reject_constant)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")
_SURROGATES = re.compile("[\ud800-\udfff]")


def unmarshal(data: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """The value OPA's ``util.UnmarshalJSON`` gives for a body, or :class:`GoJSONError` with Go's message.

    ``max_depth`` below Go's own limit refuses documents nested deeper, with a message that says why: a value
    that goes on inside other JSON (the input document, the engine's request) must leave room for those levels.
    """
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    if max_depth < _FAST_PATH_DEPTH:
        return _GoParser(raw, max_depth).document()  # a budget the fast path could not be trusted to keep
    text = data if isinstance(data, str) else data.decode("utf-8", GO_REPLACE)
    try:
        value, end = _FAST.raw_decode(text, _WHITESPACE.match(text).end())  # type: ignore[union-attr]
    except (ValueError, RecursionError):
        # Go's message for a refused body, or a body Go accepts nested deeper than Python's recursion limit.
        return _GoParser(raw, max_depth).document()
    rest = text[end:].strip(" \t\r\n")
    if rest and rest != "null":  # a trailing null token is accepted: OPA's Token() check sees (nil, nil)
        return _GoParser(raw, max_depth).document()  # refused: Go's message for what follows
    if _SURROGATE_ESCAPE.search(text) is not None:
        value = _replace_lone_surrogates(value)
    # Python 3.13's C scanner no longer stops at the recursion limit: count, when the brackets could add up.
    if (raw.count(b"[") + raw.count(b"{") > max_depth) and _deeper_than(value, max_depth):
        return _GoParser(raw, max_depth).document()  # refused, with its message
    return value


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_FAST_PATH_DEPTH = 2000
"""Below this, a depth budget is checked by the iterative parser rather than after the fast path."""


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether a parsed value nests more than ``limit`` containers deep (iteratively, any depth)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return False


def _fix(text: str) -> str:
    return _SURROGATES.sub("\ufffd", text)


def _replace_lone_surrogates(value: Any) -> Any:
    """Python's scanner joins escaped surrogate pairs and keeps a lone surrogate; Go writes U+FFFD for it."""
    if isinstance(value, str):
        return _fix(value)
    if not isinstance(value, dict | list):
        return value
    root: list[Any] = [value]
    stack: list[tuple[Any, Any]] = [(root, 0)]
    while stack:
        parent, key = stack.pop()
        item = parent[key]
        if isinstance(item, str):
            parent[key] = _fix(item)
        elif isinstance(item, list):
            stack.extend((item, i) for i in range(len(item)))
        elif isinstance(item, dict):
            if any(_SURROGATES.search(k) for k in item):
                fixed = {_fix(k): v for k, v in item.items()}
                parent[key] = item = fixed
            stack.extend((item, k) for k in item)
    return root[0]


def _quote_char(c: int) -> str:
    # encoding/json quoteChar: a byte is shown as the rune with that value.
    if c == 0x27:
        return "'\\''"
    if c == 0x22:
        return "'\"'"
    return f"'{quote_rune(chr(c))}'"


class _GoParser:
    """encoding/json's scanner over the raw bytes, as OPA drives it: builds the value, or raises Go's error.

    Iterative, so any depth Go accepts parses whatever Python's recursion limit is.
    """

    _WS = frozenset(b" \t\r\n")
    _DIGITS = frozenset(b"0123456789")
    _HEX = frozenset(b"0123456789abcdefABCDEF")

    def __init__(self, data: bytes, max_depth: int = MAX_DEPTH) -> None:
        self.b = data
        self.i = 0
        self.max_depth = max_depth

    def _err(self, c: int, context: str) -> GoJSONError:
        return GoJSONError(f"invalid character {_quote_char(c)} {context}")

    def _ws(self) -> int:
        """Skip whitespace; the next byte, or -1 at the end."""
        b, i, n = self.b, self.i, len(self.b)
        while i < n and b[i] in self._WS:
            i += 1
        self.i = i
        return b[i] if i < n else -1

    def _ws_more(self) -> int:
        c = self._ws()
        if c < 0:
            raise GoJSONError("unexpected EOF")
        return c

    def _next(self) -> int:
        if self.i >= len(self.b):
            raise GoJSONError("unexpected EOF")
        return self.b[self.i]

    def document(self) -> Any:
        if self._ws() < 0:
            raise GoJSONError("EOF")
        value = self._value()
        c = self._ws()
        if c < 0:
            return value
        if c in (0x7B, 0x5B):  # { [ : Token returns a Delim
            raise GoJSONError(f"error: invalid character '{chr(c)}' after top-level value")
        if c in (0x7D, 0x5D, 0x2C, 0x3A):  # } ] , :
            raise self._err(c, "looking for beginning of value")
        start = self.i
        self._value()
        token = self.b[start : self.i]
        if token == b"null":
            return value  # Token() gives (nil, nil): OPA's check lets it through
        if c == 0x22:
            shown = _fix(json.loads(token.decode("utf-8", GO_REPLACE)))
        elif c in (0x74, 0x66):
            shown = f"%!s(bool={token.decode()})"
        else:
            shown = token.decode()
        raise GoJSONError(f"error: invalid character '{shown}' after top-level value")

    def _key(self, c: int) -> str:
        """An object key and its colon; leaves the parser at the start of the member's value."""
        if c != 0x22:
            raise self._err(c, "looking for beginning of object key string")
        key = self._string()
        c = self._ws_more()
        if c != 0x3A:
            raise self._err(c, "after object key")
        self.i += 1
        self._ws_more()
        return key

    def _value(self) -> Any:
        containers: list[Any] = []  # the open lists and dicts, innermost last
        keys: list[str] = []  # the pending key of each open container ("" for a list)
        while True:
            c = self._next()
            value: Any
            if c in (0x7B, 0x5B):  # { [
                if len(containers) >= self.max_depth:
                    if self.max_depth == MAX_DEPTH:
                        raise GoJSONError("exceeded max depth")
                    raise GoJSONError(
                        f"exceeded max depth: nested deeper than {self.max_depth} levels, "
                        f"which the policy engine cannot take as input (Go's JSON limit is {MAX_DEPTH})"
                    )
                self.i += 1
                first = self._ws_more()
                if first == c + 2:  # } or ]: an empty container
                    self.i += 1
                    value = {} if c == 0x7B else []
                elif c == 0x7B:
                    containers.append({})
                    keys.append(self._key(first))
                    continue
                else:
                    containers.append([])
                    keys.append("")
                    continue
            else:
                value = self._scalar(c)
            # The value is complete: store it, then close every container that ends after it.
            while True:
                if not containers:
                    return value
                top = containers[-1]
                is_object = isinstance(top, dict)
                if is_object:
                    top[keys[-1]] = value
                else:
                    top.append(value)
                c = self._ws_more()
                if c == 0x2C:  # ,
                    self.i += 1
                    following = self._ws_more()
                    if is_object:
                        keys[-1] = self._key(following)
                    break
                if c == (0x7D if is_object else 0x5D):
                    self.i += 1
                    keys.pop()
                    value = containers.pop()
                    continue
                raise self._err(c, "after object key:value pair" if is_object else "after array element")

    def _scalar(self, c: int) -> Any:
        if c == 0x22:
            return self._string()
        if c == 0x2D or c in self._DIGITS:
            return self._number()
        if c == 0x74:
            self._literal(b"true")
            return True
        if c == 0x66:
            self._literal(b"false")
            return False
        if c == 0x6E:
            self._literal(b"null")
            return None
        raise self._err(c, "looking for beginning of value")

    def _string(self) -> str:
        b, start = self.b, self.i
        self.i += 1
        while True:
            c = self._next()
            self.i += 1
            if c == 0x22:
                break
            if c == 0x5C:
                e = self._next()
                self.i += 1
                if e == 0x75:
                    for _ in range(4):
                        h = self._next()
                        if h not in self._HEX:
                            raise self._err(h, "in \\u hexadecimal character escape")
                        self.i += 1
                elif e not in b'"\\/bfnrt':
                    raise self._err(e, "in string escape code")
            elif c < 0x20:
                raise self._err(c, "in string literal")
        text, _ = scanstring(b[start + 1 : self.i].decode("utf-8", GO_REPLACE), 0, True)
        return _fix(text)

    def _digits(self) -> None:
        b, n = self.b, len(self.b)
        while self.i < n and b[self.i] in self._DIGITS:
            self.i += 1

    def _number(self) -> Any:
        b, n, start = self.b, len(self.b), self.i
        if b[self.i] == 0x2D:
            self.i += 1
            c = self._next()
            if c not in self._DIGITS:
                raise self._err(c, "in numeric literal")
        if b[self.i] == 0x30:
            self.i += 1
        else:
            self._digits()
        if self.i < n and b[self.i] == 0x2E:
            self.i += 1
            c = self._next()
            if c not in self._DIGITS:
                raise self._err(c, "after decimal point in numeric literal")
            self._digits()
        if self.i < n and b[self.i] in (0x65, 0x45):
            self.i += 1
            c = self._next()
            if c in (0x2B, 0x2D):
                self.i += 1
                c = self._next()
            if c not in self._DIGITS:
                raise self._err(c, "in exponent of numeric literal")
            self._digits()
        return number(b[start : self.i])

    def _literal(self, word: bytes) -> None:
        self.i += 1
        for expected in word[1:]:
            c = self._next()
            if c != expected:
                raise self._err(c, f"in literal {word.decode()} (expecting {_quote_char(expected)})")
            self.i += 1
