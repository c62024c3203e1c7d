"""Where a published tlog-tiles log is read from, and where an auditor keeps the checkpoint it trusts.

A *location* is a tlog-tiles prefix (https://c2sp.org/tlog-tiles): a local directory (an export, a mirror) or an
``http://`` / ``https://`` URL prefix. Both give readside/verify_tiles.py the same ``fetch(path) -> bytes | None``:
the bytes of ``<prefix>/<path>``, ``None`` when the resource is not there (no such file, HTTP 404 or 410), and a
TilesUnreadableError for anything else (permissions, I/O, connection, timeout, any other HTTP status), so a
location that cannot be read is never mistaken for a log that does not verify.

No resource of a tlog-tiles log can be larger than a full entry bundle (256 entries of at most 65,535 bytes, each
with its 2-byte length); a larger answer is refused before it is read whole.

The trusted-state file holds one signed checkpoint note, byte for byte as it was fetched. It is replaced
atomically (temporary file, fsync, rename: ledger/files.py), and one verification at a time holds its lock, so two
runs started by overlapping cron jobs cannot move it backwards.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import urllib3
from urllib3.exceptions import HTTPError

from authz_ledger import __version__
from authz_ledger.errors import ConfigError, TilesError, TilesUnreadableError
from authz_ledger.ledger.files import write_file_atomically
from authz_ledger.tlog.tiles import MAX_BUNDLED_ENTRY, TILE_WIDTH

MAX_RESOURCE_BYTES = TILE_WIDTH * (2 + MAX_BUNDLED_ENTRY)
"""The largest resource a tlog-tiles prefix can serve: a full bundle of the largest entries."""
HTTP_WORKERS = 4
"""Fetches in flight against an HTTP prefix: tiles are small, so latency bounds a serial reader; more than 4 overflow
the 5-connection listen backlog of simple servers (Python's http.server), whose dropped SYNs cost a second each."""
_NOT_SERVED = (404, 410)
_STATE_MODE = 0o644  # a checkpoint is public; the state file only has to be authentic, not secret


class Location(Protocol):
    """A tlog-tiles prefix to read."""

    workers: int
    """How many fetches may usefully run at once."""

    def fetch(self, path: str) -> bytes | None: ...
    def close(self) -> None: ...


class DirectoryLocation:
    """A tlog-tiles directory on a local filesystem (an export, or a copy of one)."""

    workers = 1  # reading local files is not what bounds the verification: hashing is

    def __init__(self, directory: str) -> None:
        self.root = Path(directory)
        if not self.root.is_dir():
            raise TilesUnreadableError(f"{directory} is not a directory (nor an http:// or https:// prefix)")

    def fetch(self, path: str) -> bytes | None:
        full = self.root / path
        try:
            with open(full, "rb") as f:
                data = f.read(MAX_RESOURCE_BYTES + 1)
        except (FileNotFoundError, NotADirectoryError):  # NotADirectory: a file stands where a parent would be
            return None
        except OSError as e:
            raise TilesUnreadableError(f"cannot read {full}: {e.strerror or e}") from e
        if len(data) > MAX_RESOURCE_BYTES:
            raise TilesError(f"{full} is larger than any tlog-tiles resource ({MAX_RESOURCE_BYTES} bytes)")
        return data

    def close(self) -> None:
        pass


class HttpLocation:
    """A tlog-tiles URL prefix, read with urllib3: bounded timeouts, a few retries, gzip decoded.

    Transient failures (connection errors, 429 and 5xx answers) are retried up to three times with a short backoff,
    then reported as TilesUnreadableError; redirects are followed (static hosting uses them) up to three.
    """

    workers = HTTP_WORKERS

    def __init__(self, prefix: str, *, timeout: float) -> None:
        self.prefix = prefix.rstrip("/") + "/"
        self._timeout = urllib3.Timeout(connect=timeout, read=timeout)
        retries = urllib3.Retry(
            total=3,
            redirect=3,
            backoff_factor=0.2,
            status_forcelist=(429, 500, 502, 503, 504),
            raise_on_status=False,
            respect_retry_after_header=False,  # a server's Retry-After must not stretch the run without bound
        )
        self._http = urllib3.PoolManager(maxsize=HTTP_WORKERS, retries=retries)
        # tlog-tiles "Log entries": bundles SHOULD be compressed; clients SHOULD accept gzip and identity.
        self._headers = {"Accept-Encoding": "gzip, identity", "User-Agent": f"authz-ledger/{__version__} verify-tiles"}

    def fetch(self, path: str) -> bytes | None:
        url = self.prefix + path
        try:
            resp = self._http.request(
                "GET", url, headers=self._headers, timeout=self._timeout, preload_content=False, decode_content=True
            )
            try:
                if resp.status in _NOT_SERVED:
                    return None
                if resp.status != 200:
                    raise TilesUnreadableError(f"GET {url}: HTTP {resp.status} {resp.reason or ''}".rstrip())
                data = resp.read(MAX_RESOURCE_BYTES + 1)
            finally:
                resp.release_conn()
        except (HTTPError, OSError) as e:
            raise TilesUnreadableError(f"GET {url}: {e}") from e
        if len(data) > MAX_RESOURCE_BYTES:
            raise TilesError(f"GET {url}: larger than any tlog-tiles resource ({MAX_RESOURCE_BYTES} bytes)")
        return data

    def close(self) -> None:
        self._http.clear()


def open_location(location: str, *, timeout: float = 30.0) -> Location:
    """A directory, or an ``http://`` / ``https://`` prefix (``timeout`` seconds to connect and per read)."""
    scheme = location.partition("://")[0].lower() if "://" in location else ""
    if scheme in ("http", "https"):
        if timeout <= 0:
            raise ConfigError(f"the timeout must be positive, got {timeout}")
        return HttpLocation(location, timeout=timeout)
    if scheme:
        raise ConfigError(f"{location}: only directories and http:// or https:// prefixes can be read")
    return DirectoryLocation(location)


# --- The trusted-state file -----------------------------------------------------------------------------------


def read_state(path: Path) -> bytes | None:
    """The trusted checkpoint note, or None when the file does not exist yet."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"cannot read the state file {path}: {e.strerror or e}") from e


def write_state(path: Path, signed: bytes) -> None:
    """Replace the trusted checkpoint atomically (a crash leaves the old one or the new one, never half)."""
    try:
        write_file_atomically(path, signed, _STATE_MODE)
    except OSError as e:
        raise ConfigError(f"cannot write the state file {path}: {e.strerror or e}") from e


@contextmanager
def state_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside the state file (``.<name>.lock``) for one whole verification."""
    lock = path.with_name(f".{path.name}.lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise ConfigError(f"cannot create the lock {lock}: {e.strerror or e}") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise ConfigError(f"another verification is using the state file {path}") from None
            raise ConfigError(f"cannot lock {lock}: {e.strerror or e}") from e
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
