"""Logging set-up: plain text or JSON lines on stderr. Libraries log; only the CLI prints.

Lines about a decision carry its decision id and Envoy request id (in the text, and as JSON fields with the
trace context). Nothing secret is ever logged: handlers log ids, paths after redaction and error classes, never
headers or bodies.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

# C0 and C1 controls, DEL and the Unicode line / paragraph separators: anything a terminal or a log shipper may
# take as the end of a line or as a command (and lone surrogates, which no encoder writes). A request id or path
# carrying one must not forge a log line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def escape_controls(text: str) -> str:
    """``text`` with every control character written as a Python-style escape (``\\n``, ``\\x1b``, ``\\u2028``)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class PlainFormatter(logging.Formatter):
    """One record, one line: the message's control characters escaped; a traceback's lines indented, so that
    none of them can pass for a record of its own."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        lines = super().formatException(ei).split("\n")
        return "\n".join("  " + escape_controls(line) for line in lines)

    def formatStack(self, stack_info: str) -> str:
        return "\n".join("  " + escape_controls(line) for line in stack_info.split("\n"))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("decision_id", "request_id", "traceparent", "b3"):
            if hasattr(record, key):
                doc[key] = getattr(record, key)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        # ASCII only: any text, even a lone surrogate from undecodable bytes, becomes a valid JSON escape, and a
        # control character can never break the one-line-per-record framing.
        return json.dumps(doc, ensure_ascii=True)


def setup_logging(level: str = "info", fmt: str = "plain") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(PlainFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
