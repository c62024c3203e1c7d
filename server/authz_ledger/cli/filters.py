"""The filters ``list`` and ``tail`` share: time bounds, outcome, path prefix, principal, request headers.

Time bounds and the other fields become an :class:`EntryFilter` the source applies (through the time index when
it can); header conditions are read from each entry's recorded input document here, after the source.
"""

from __future__ import annotations

import argparse
import datetime
import re
import time
from collections.abc import Iterator

import orjson

from authz_ledger.errors import ConfigError
from authz_ledger.readside.values import EntryFilter, StoredEntry
from authz_ledger.record import entry
from authz_ledger.record.redact import document_headers

OUTCOMES = {name: value for value, name in entry.OUTCOME_NAMES.items()}

_AGO = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str | None, flag: str, *, now_ns: int | None = None) -> int:
    """Unix nanoseconds, an ISO 8601 time (UTC when it names no zone), or a duration before now (``90s``,
    ``30m``, ``1h``, ``2d``, ``1w``, or several: ``1h30m``)."""
    if not text:
        return 0
    if text.isdigit():
        return int(text)
    parts = _AGO.findall(text)
    if parts and "".join(n + u for n, u in parts) == text:
        ago = sum(float(n) * _UNIT_S[u] for n, u in parts)
        now = time.time_ns() if now_ns is None else now_ns
        return max(now - int(ago * 1e9), 1)
    try:
        t = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{flag}: {text!r} is neither Unix nanoseconds, an ISO 8601 time nor a duration such as 1h or 30m"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.UTC)
    return int(t.timestamp() * 1_000_000) * 1000


def entry_filter(args: argparse.Namespace) -> EntryFilter:
    return EntryFilter(
        since_unix_nano=parse_time(args.since, "--since"),
        until_unix_nano=parse_time(args.until, "--until"),
        outcome=OUTCOMES[args.outcome] if args.outcome else 0,
        path_prefix=args.path_prefix or "",
        principal=args.principal or "",
    )


def header_pairs(args: argparse.Namespace) -> list[tuple[str, str]]:
    pairs = []
    for item in args.header or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--header expects NAME=VALUE, got {item!r}")
        pairs.append((name.strip().lower(), value))
    return pairs


def with_headers(entries: Iterator[StoredEntry], pairs: list[tuple[str, str]]) -> Iterator[StoredEntry]:
    """Entries whose recorded request carried every NAME=VALUE (read from the recorded input document, so a
    header the ledger stores as a digest, such as authorization, matches only its digest)."""
    if not pairs:
        yield from entries
        return
    for e in entries:
        if not e.message.input_json:
            continue
        try:
            headers = document_headers(orjson.loads(e.message.input_json))
        except ValueError:
            continue
        if all(headers.get(name) == value for name, value in pairs):
            yield e


def filter_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("filters (all must match)")
    g.add_argument(
        "--since",
        metavar="TIME",
        help="entries at or after TIME: ISO 8601 (UTC if no zone), Unix ns, or a duration ago (1h, 30m, 2d)",
    )
    g.add_argument("--until", metavar="TIME", help="entries before TIME")
    g.add_argument("--outcome", choices=sorted(OUTCOMES), help="only this outcome")
    g.add_argument("--path-prefix", metavar="PREFIX", help="only request paths starting with PREFIX")
    g.add_argument("--principal", metavar="NAME", help="only this source or destination principal")
    g.add_argument(
        "--header",
        action="append",
        metavar="NAME=VALUE",
        help="only requests that carried this header value, e.g. --header x-user=alice (repeatable)",
    )
