"""Published tlog-tiles logs for the verify-tiles tests: a real ledger (real writer, real LMDB) exported with the
real exporter, optionally cosigned by witnesses, served from its directory or over HTTP by a real server."""

from __future__ import annotations

import base64
import gzip
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authz_ledger.ledger.store import Store
from authz_ledger.readside.export_tiles import export_tiles
from authz_ledger.tlog import checkpoint, note
from authz_ledger.tlog.cosignature import Cosigner, add_cosignatures
from tests.support.exports import append, publish_checkpoint_at
from tests.support.spec_tiles import sha256


@dataclass
class Published:
    """A ledger, the key that signs it, the witnesses that cosigned its checkpoints, and where it was exported."""

    store: Store
    signer: note.Signer
    witnesses: list[Cosigner] = field(default_factory=list)

    @property
    def vkey(self) -> str:
        return self.signer.verifier_key()

    @property
    def witness_vkeys(self) -> list[str]:
        return [w.vkey() for w in self.witnesses]

    def signed(self, size: int) -> bytes:
        """The checkpoint at ``size`` (signed now if it was not), cosigned by every witness."""
        publish_checkpoint_at(self.store, self.signer, size)
        got = self.store.checkpoint(size)
        assert got is not None
        signed = got[1]
        if not self.witnesses:
            return signed
        text = note.open_note(signed, [self.signer.verifier()]).text
        verifiers = [self.signer.verifier(), *(w.verifier() for w in self.witnesses)]
        return add_cosignatures(signed, verifiers, [w.cosign(text) for w in self.witnesses])

    def export(self, out: Path, size: int) -> Path:
        """Export the tree at ``size`` into ``out`` (incrementally), with its cosigned checkpoint."""
        cosigned = self.signed(size)
        if self.witnesses:
            self.store.put_cosigned(size, cosigned)
        export_tiles(self.store, out, checkpoint_size=size, durable=False)
        return out


# --- Changing a published directory ------------------------------------------------------------------------


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path, by: int) -> None:
    path.write_bytes(path.read_bytes()[:-by])


def read_bundle(path: Path) -> list[bytes]:
    data, entries, pos = path.read_bytes(), [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 2], "big")
        entries.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return entries


def write_bundle(path: Path, entries: list[bytes]) -> None:
    path.write_bytes(b"".join(len(e).to_bytes(2, "big") + e for e in entries))


def forge_entry(out: Path, bundle: str, tile: str, index: int) -> None:
    """A consistent forgery: entry ``index`` changed in its bundle and its leaf hash in the level-0 tile alike."""
    entries = read_bundle(out / bundle)
    entries[index] = entries[index][:-1] + bytes([entries[index][-1] ^ 1])
    write_bundle(out / bundle, entries)
    hashes = bytearray((out / tile).read_bytes())
    hashes[index * 32 : (index + 1) * 32] = sha256(b"\x00" + entries[index])
    (out / tile).write_bytes(bytes(hashes))


def append_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(path.read_bytes() + data)


def replace_bytes(path: Path, old: bytes, new: bytes) -> None:
    path.write_bytes(path.read_bytes().replace(old, new, 1))


def resign_checkpoint(out: Path, key: note.Signer, root: bytes) -> None:
    """Replace ``out/checkpoint`` by one of the same origin and size with ``root``, signed by ``key`` alone."""
    text = (out / "checkpoint").read_bytes()
    cp = checkpoint.Checkpoint.parse(text[: text.rfind(b"\n\n") + 1])
    (out / "checkpoint").write_bytes(checkpoint.sign_checkpoint(checkpoint.Checkpoint(cp.origin, cp.size, root), [key]))


def drop_signature_line(out: Path, name: str) -> None:
    lines = (out / "checkpoint").read_bytes().split(b"\n")
    (out / "checkpoint").write_bytes(b"\n".join(line for line in lines if not line.startswith(f"— {name} ".encode())))


def corrupt_last_signature(out: Path) -> None:
    """Flip the last bit of the last signature line's signature (its key name and ID left intact)."""
    text, _, block = (out / "checkpoint").read_bytes().rpartition(b"\n\n")
    lines = block.decode().splitlines()
    name, encoded = lines[-1][2:].split(" ")
    raw = bytearray(base64.b64decode(encoded))
    raw[-1] ^= 1
    lines[-1] = f"— {name} {base64.b64encode(bytes(raw)).decode()}"
    (out / "checkpoint").write_bytes(text + b"\n\n" + "".join(line + "\n" for line in lines).encode())


def other_history(directory: Path, signer: note.Signer, size: int) -> bytes:
    """The checkpoint of ``size`` entries of another history signed by ``signer`` (with the log's key: a fork)."""
    other = Store(directory / "other-history", map_size=32 << 20, durable=False)
    try:
        append(other, signer, size, seed=99)
        got = other.checkpoint(size)
        assert got is not None
        return got[1]
    finally:
        other.close()


# --- Serving a directory over HTTP -------------------------------------------------------------------------


@dataclass
class Served:
    url: str
    requests: list[str] = field(default_factory=list)
    """Paths asked for, in order."""
    gzipped: list[str] = field(default_factory=list)
    """Paths answered with Content-Encoding: gzip."""
    refuse: dict[str, int] = field(default_factory=dict)
    """Path (relative to the prefix) -> HTTP status to answer instead of the file."""
    hold: set[str] = field(default_factory=set)
    """Paths whose answer waits until ``release`` is set (a server that stalls)."""
    release: threading.Event = field(default_factory=threading.Event)


@contextmanager
def serve_directory(directory: Path, *, prefix: str = "/log", gzip_bundles: bool = False) -> Iterator[Served]:
    """``directory`` at ``http://127.0.0.1:<port><prefix>/`` from Python's http.server; stopped on exit."""
    served = Served(url="")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(directory), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if not self.path.startswith(prefix + "/"):
                self.send_error(404)
                return
            rel = self.path[len(prefix) + 1 :]
            served.requests.append(rel)
            if rel in served.hold:
                served.release.wait(30)
            if rel in served.refuse:
                self.send_error(served.refuse[rel])
                return
            file = directory / rel
            if gzip_bundles and rel.startswith("tile/entries/") and file.is_file():
                # tlog-tiles "Log entries": Content-Encoding: gzip with no negotiation is allowed.
                body = gzip.compress(file.read_bytes())
                served.gzipped.append(rel)
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.path = "/" + rel
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="tiles-http", daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{server.server_address[1]}{prefix}"
    try:
        yield served
    finally:
        served.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)
