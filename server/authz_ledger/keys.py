"""Signing keys and the redaction secret, kept as files beside the ledger.

Both are secrets: created with mode 0600 and refused when group or others can read them (fail closed -- a key
others can read cannot vouch for anything). The signing key file holds the golang.org/x/mod/sumdb/note private key
string (``PRIVATE+KEY+<name>+<id>+<base64>``), so tools from that ecosystem can read it.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

from authz_ledger.errors import NoteError, PermissionsError, SigningKeyError
from authz_ledger.tlog import note

log = logging.getLogger(__name__)

SIGNING_KEY_FILE = "signing.key"
REDACTION_KEY_FILE = "redaction.key"


def _check_private(path: Path) -> None:
    st = path.stat()
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SigningKeyError(
            f"{path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"refusing to use it. Run: chmod 600 {path}"
        )


def check_directory(path: Path, what: str) -> None:
    """Refuse a directory every local user can write (they could swap the ledger or the keys underneath us);
    warn when every local user can read it (recorded decisions, key file names). Group access is allowed: a
    Kubernetes volume with ``fsGroup`` is group-writable by design, and its group is the pod's own."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & stat.S_IWOTH:
        raise PermissionsError(
            f"the {what} {path} is writable by others (mode {mode:04o}): anyone on this host could replace what "
            f"is in it; refusing to use it. Run: chmod o-w {path} (or chmod 700 {path})"
        )
    if mode & (stat.S_IROTH | stat.S_IXOTH):
        log.warning(
            "the %s %s is readable by others (mode %04o): every local user can read what is recorded there. "
            "Run: chmod 700 %s", what, path, mode, path,
        )  # fmt: skip


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_signing_key(path: Path, origin: str) -> note.Signer:
    """Create a new Ed25519 signing key named ``origin`` at ``path`` (never overwrites)."""
    signer = note.generate_signer(origin)
    try:
        _write_private(path, signer.private_key_string().encode() + b"\n")
    except FileExistsError as e:
        raise SigningKeyError(f"{path} already exists; refusing to overwrite a signing key") from e
    return signer


def load_signing_key(path: Path) -> note.Signer:
    try:
        _check_private(path)
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError as e:
        raise SigningKeyError(f"signing key {path} does not exist") from e
    except (OSError, UnicodeDecodeError) as e:
        raise SigningKeyError(f"cannot read signing key {path}: {e}") from e
    try:
        return note.Signer.from_private_key_string(text)
    except NoteError as e:
        raise SigningKeyError(f"{path} does not hold a valid signing key: {e}") from e


def load_or_create_signing_key(path: Path, origin: str) -> tuple[note.Signer, bool]:
    """The key at ``path``, created on first start. Returns (signer, created)."""
    if path.exists():
        signer = load_signing_key(path)
        return signer, False
    return write_signing_key(path, origin), True


def load_or_create_redaction_key(path: Path) -> bytes:
    """The per-ledger HMAC secret that turns secrets into correlatable digests."""
    if not path.exists():
        _write_private(path, secrets.token_bytes(32))
    _check_private(path)
    key = path.read_bytes()
    if len(key) < 32:
        raise SigningKeyError(f"redaction key {path} is shorter than 32 bytes")
    return key


def load_verifiers(vkeys: Sequence[str]) -> list[note.Verifier]:
    """The verifiers of ``--vkey`` values, each a verifier key or a file of them (one per line, blank lines skipped).

    The one way of reading verifier keys (``--vkey``, ``ledger.verifier_keys``): several keys let a ledger
    signed by rotated keys verify.
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
