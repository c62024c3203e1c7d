"""Helpers every ``authz-ledger`` command module shares: how bytes are printed and how ``--vkey`` is read."""

from __future__ import annotations

import base64

from authz_ledger.keys import load_verifiers

__all__ = ["b64", "load_verifiers"]


def b64(b: bytes) -> str:
    """Standard base64 with padding: hashes, roots and entry bytes in every command's output."""
    return base64.b64encode(b).decode()
