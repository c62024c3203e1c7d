"""A tlog-tiles reader written for the tests from the C2SP specs alone (https://c2sp.org/tlog-tiles,
https://c2sp.org/signed-note).

``SpecReader`` shares no code with authz_ledger: its own tile paths (tlog-tiles "Merkle Tree"), its own RFC 6962
hashing, its own signed-note / checkpoint parsing with Ed25519 verification through ``cryptography``, and its own
tile-to-root computation. It reads only an exported directory and a verifier key string.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class ReaderError(Exception):
    """The exported log does not verify."""


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def mth(hashes: list[bytes]) -> bytes:
    """RFC 6962 §2.1 MTH over leaf hashes: split at the largest power of two below n."""
    if not hashes:
        return sha256(b"")
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return sha256(b"\x01" + mth(hashes[:k]) + mth(hashes[k:]))


def spec_index_path(n: int) -> str:
    """tlog-tiles: zero-padded 3-digit path elements, all but the last prefixed with "x"."""
    digits = str(n)
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join(["x" + g for g in groups[:-1]] + [groups[-1]])


class SpecReader:
    """Fetches ``<prefix>/checkpoint``, ``<prefix>/tile/...`` from a directory and checks the whole log."""

    def __init__(self, prefix: Path, vkey: str) -> None:
        self.prefix = prefix
        name, key_id_hex, key_b64 = vkey.split("+", 2)  # base64 may itself contain "+"
        key = base64.b64decode(key_b64)
        if key[0] != 0x01 or len(key) != 33:
            raise ReaderError("not an Ed25519 verifier key")
        # signed-note: key ID = SHA-256(name || 0x0A || 0x01 || public key)[:4]
        if sha256(name.encode() + b"\n" + key)[:4] != bytes.fromhex(key_id_hex):
            raise ReaderError("verifier key id does not match the key")
        self.name, self.key_id, self.public = name, bytes.fromhex(key_id_hex), key[1:]
        self.fetched: list[str] = []

    def get(self, path: str) -> bytes:
        self.fetched.append(path)
        try:
            return (self.prefix / path).read_bytes()
        except FileNotFoundError:
            raise ReaderError(f"404 {path}") from None

    def checkpoint(self) -> tuple[str, int, bytes]:
        """origin, size, root of a checkpoint that carries a valid signature by our key."""
        msg = self.get("checkpoint")
        cut = msg.rfind(b"\n\n")
        if cut < 0:
            raise ReaderError("checkpoint is not a signed note")
        text, sig_block = msg[: cut + 1], msg[cut + 2 :].decode()
        good = False
        for line in sig_block.splitlines():
            if not line.startswith("\u2014 "):
                raise ReaderError(f"bad signature line {line!r}")
            name, b64 = line[2:].split(" ")
            raw = base64.b64decode(b64)
            if name != self.name or raw[:4] != self.key_id:
                continue  # unknown keys (witness cosignatures) are ignored
            try:
                Ed25519PublicKey.from_public_bytes(self.public).verify(raw[4:], text)
            except InvalidSignature:
                raise ReaderError("checkpoint signature does not verify") from None
            good = True
        if not good:
            raise ReaderError("no signature by the log's key")
        lines = text.decode().split("\n")
        origin, size, root = lines[0], int(lines[1]), base64.b64decode(lines[2], validate=True)
        if origin != self.name:
            raise ReaderError("checkpoint origin is not the key name")
        return origin, size, root

    @staticmethod
    def width(level: int, n: int, size: int) -> int:
        """Hashes in tile n of level ``level`` of a tree of ``size`` ("Partial Tiles": floor(s/256**l) mod 256)."""
        count = size // 256**level
        if n < count // 256:
            return 256
        if n == count // 256 and count % 256:
            return count % 256
        raise ReaderError(f"tile {level}/{n} does not exist at size {size}")

    def tile(self, level: int | str, n: int, size: int) -> bytes:
        w = self.width(0 if level == "entries" else int(level), n, size)
        return self.get(f"tile/{level}/{spec_index_path(n)}" + ("" if w == 256 else f".p/{w}"))

    def hashes(self, level: int, n: int, size: int) -> list[bytes]:
        data = self.tile(level, n, size)
        if len(data) != 32 * self.width(level, n, size):
            raise ReaderError(f"tile {level}/{n} has {len(data)} bytes")
        return [data[i : i + 32] for i in range(0, len(data), 32)]

    def bundle(self, n: int, size: int) -> list[bytes]:
        data = self.tile("entries", n, size)
        out, pos = [], 0
        while pos < len(data):
            if pos + 2 > len(data):
                raise ReaderError(f"bundle {n} ends inside a length")
            length = int.from_bytes(data[pos : pos + 2], "big")
            if pos + 2 + length > len(data):
                raise ReaderError(f"bundle {n} ends inside an entry")
            out.append(data[pos + 2 : pos + 2 + length])
            pos += 2 + length
        if len(out) != self.width(0, n, size):
            raise ReaderError(f"bundle {n} holds {len(out)} entries")
        return out

    def root_from_tiles(self, size: int) -> bytes:
        """Fold the tree's perfect subtrees, each read from the one tile whose hashes it spans."""
        subtrees = []
        lo = 0
        for k in reversed(range(size.bit_length())):
            if size >> k & 1:
                level = k // 8  # a subtree of 2**k leaves is 2**(k - 8*level) consecutive level-`level` hashes
                first = lo >> (8 * level)
                n, i = divmod(first, 256)
                hashes = self.hashes(level, n, size)[i : i + (1 << (k - 8 * level))]
                subtrees.append(mth(hashes))
                lo += 1 << k
        if not subtrees:
            return sha256(b"")
        h = subtrees[-1]
        for left in reversed(subtrees[:-1]):
            h = sha256(b"\x01" + left + h)
        return h

    def verify(self) -> tuple[int, list[bytes]]:
        """Check everything; return the tree size and every entry."""
        _, size, root = self.checkpoint()
        entries: list[bytes] = []
        leaves: list[bytes] = []
        for n in range((size + 255) // 256):
            bundle = self.bundle(n, size)
            computed = [sha256(b"\x00" + e) for e in bundle]
            if computed != self.hashes(0, n, size):
                raise ReaderError(f"level-0 tile {n} does not match entry bundle {n}")
            entries += bundle
            leaves += computed
        level = 1
        while size // 256**level:
            count = size // 256**level
            for n in range((count + 255) // 256):
                for i, h in enumerate(self.hashes(level, n, size)):
                    if mth(self.hashes(level - 1, n * 256 + i, size)) != h:
                        raise ReaderError(
                            f"tile {level}/{n} hash {i} is not the root of tile {level - 1}/{n * 256 + i}"
                        )
            level += 1
        if self.root_from_tiles(size) != root:
            raise ReaderError("root computed from the tiles is not the checkpoint's")
        if mth(leaves) != root:
            raise ReaderError("root computed from the entries is not the checkpoint's")
        return size, entries
