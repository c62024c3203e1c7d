"""Helpers every ``authz-ledger`` command module shares: how bytes are printed and how ``--vkey`` is read."""

from __future__ import annotations

import argparse
import base64

from authz_ledger.keys import load_verifiers

__all__ = ["b64", "load_verifiers", "non_negative", "positive"]

INDEX_LIMIT = (1 << 63) - 1
"""The largest index, size or count a command accepts: sequence numbers are 64-bit keys (store.u64), and no
ledger comes near 2**63 entries."""


def non_negative(text: str) -> int:
    """argparse ``type`` for an index, a tree size or a count: an integer in 0 .. 2**63-1, or a usage error
    (exit 2) that says so, never a traceback deep in the store."""
    return _bounded(text, 0)


def positive(text: str) -> int:
    """argparse ``type`` for a duration or a limit that must be at least 1."""
    return _bounded(text, 1)


def _bounded(text: str, low: int) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not low <= value <= INDEX_LIMIT:
        raise argparse.ArgumentTypeError(f"{value} is out of range: it must be between {low} and {INDEX_LIMIT}")
    return value


def b64(b: bytes) -> str:
    """Standard base64 with padding: hashes, roots and entry bytes in every command's output."""
    return base64.b64encode(b).decode()
