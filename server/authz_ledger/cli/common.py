"""Helpers every ``authz-ledger`` command module shares: how bytes are printed and how ``--vkey`` is read."""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from pathlib import Path

from authz_ledger.errors import NoteError
from authz_ledger.tlog import note


def b64(b: bytes) -> str:
    """Standard base64 with padding: hashes, roots and entry bytes in every command's output."""
    return base64.b64encode(b).decode()


def load_verifiers(vkeys: Sequence[str]) -> list[note.Verifier]:
    """The verifiers of ``--vkey`` values, each a verifier key or a file of them (one per line, blank lines skipped).

    The CLI's one way of reading --vkey: several keys let a ledger signed by rotated keys verify.
    """
    out = []
    for v in vkeys:
        text = Path(v).read_text(encoding="utf-8").strip() if os.path.isfile(v) else v.strip()
        for line in text.splitlines():
            if line.strip():
                out.append(note.Verifier.from_vkey(line.strip()))
    if not out:
        raise NoteError("no verifier key given")
    return out
