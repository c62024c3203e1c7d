"""A C2SP tlog-witness written for the tests from the specs alone, served over real HTTP on 127.0.0.1.

Nothing here imports authz_ledger: signed-note parsing, vkey parsing, RFC 9162 §2.1.4.2 consistency verification
and tlog-cosignature v1 signing are re-implemented from c2sp.org/signed-note, c2sp.org/tlog-witness,
c2sp.org/tlog-cosignature and RFC 9162, so that the ledger's code paths are checked against an independent
reading of the same texts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _b64(text: str) -> bytes:
    return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)


def rfc9162_verify_consistency(
    first: int, second: int, first_hash: bytes, second_hash: bytes, proof: list[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2, step by step, for 0 < first < second."""
    if not 0 < first < second or not proof:
        return False
    # 1. If consistency_path is an empty array, stop and fail (checked above).
    path = list(proof)
    # 2. If first is an exact power of 2, then prepend first_hash to the consistency_path array.
    if first & (first - 1) == 0:
        path.insert(0, first_hash)
    # 3. Set fn to first - 1 and sn to second - 1.
    fn, sn = first - 1, second - 1
    # 4. If LSB(fn) is set, then right-shift both fn and sn equally until LSB(fn) is not set.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. Set both fr and sr to the first value in the consistency_path array.
    fr = sr = path[0]
    # 6. For each subsequent value c in the consistency_path array:
    for c in path[1:]:
        # a. If sn is 0, then stop the iteration and fail the proof verification.
        if sn == 0:
            return False
        # b. If LSB(fn) is set, or if fn is equal to sn, then:
        if fn & 1 or fn == sn:
            fr = _sha256(b"\x01" + c + fr)
            sr = _sha256(b"\x01" + c + sr)
            # If LSB(fn) is not set, right-shift fn and sn equally until either LSB(fn) is set or fn is 0.
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = _sha256(b"\x01" + sr + c)
        # c. Finally, right-shift both fn and sn one time.
        fn >>= 1
        sn >>= 1
    # 7. Compare fr to first_hash and sr to second_hash; sn must be 0.
    return sn == 0 and fr == first_hash and sr == second_hash


@dataclass(frozen=True)
class _LogKey:
    name: str
    key_id: int
    key: Ed25519PublicKey


def parse_log_vkey(vkey: str) -> _LogKey:
    """signed-note verifier key ``name+hex id+base64(0x01 || key)``."""
    name, hex_id, key64 = vkey.split("+", 2)
    raw = _b64(key64)
    assert raw[0] == 0x01 and len(raw) == 33
    assert int.from_bytes(_sha256(name.encode() + b"\n" + raw)[:4], "big") == int(hex_id, 16)
    return _LogKey(name, int(hex_id, 16), Ed25519PublicKey.from_public_bytes(raw[1:]))


@dataclass
class Answer:
    status: int
    content_type: str = "text/plain; charset=utf-8"
    body: bytes = b""


@dataclass
class SpecWitness:
    """tlog-witness ``add-checkpoint``: one latest (size, root) per origin, updated atomically under a lock."""

    name: str
    logs: dict[str, list[str]]
    """origin -> trusted log vkeys."""
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    latest: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    requests: list[tuple[int, int, int]] = field(default_factory=list)
    """(old size, checkpoint size, status) of every request, in order."""
    forge_cosignatures: bool = False
    """Answer with a cosignature over the wrong message (a broken or malicious witness)."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._trusted = {origin: [parse_log_vkey(v) for v in vkeys] for origin, vkeys in self.logs.items()}
        self.public = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        # tlog-cosignature: key ID = SHA-256(name || "\n" || 0x04 || public key)[:4]
        self.key_id = int.from_bytes(_sha256(self.name.encode() + b"\n\x04" + self.public)[:4], "big")
        key64 = base64.b64encode(bytes([0x04]) + self.public).decode()
        self.vkey = f"{self.name}+{self.key_id:08x}+{key64}"
        self._server: ThreadingHTTPServer | None = None

    # --- HTTP ---

    def start(self) -> str:
        """Serve on a free loopback port; returns the submission prefix."""
        witness = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as tlog-witness recommends

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                answer = witness.add_checkpoint(body) if self.path == "/w/add-checkpoint" else Answer(404, body=b"no\n")
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name=f"spec-witness-{self.name}", daemon=True
        ).start()
        return self.prefix

    @property
    def prefix(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/w"

    @property
    def endpoint(self) -> str:
        """The ``witness.endpoints`` entry for this witness."""
        return f"{self.vkey} {self.prefix}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # --- add-checkpoint ---

    def add_checkpoint(self, body: bytes) -> Answer:
        answer, old, size = self._add_checkpoint(body)
        self.requests.append((old, size, answer.status))
        return answer

    def _add_checkpoint(self, body: bytes) -> tuple[Answer, int, int]:
        # Request: old size line, zero or more proof lines, an empty line, then the checkpoint (a signed note).
        head, sep, note = body.partition(b"\n\n")
        if not sep:
            return Answer(400, body=b"no empty line\n"), -1, -1
        lines = head.decode("ascii", "replace").split("\n")
        m = re.fullmatch(r"old (0|[1-9][0-9]*)", lines[0])
        if m is None or len(lines) - 1 > 63:
            return Answer(400, body=b"bad old line or too many proof lines\n"), -1, -1
        old = int(m.group(1))
        try:
            proof = [_b64(line) for line in lines[1:]]
        except binascii.Error:
            return Answer(400, body=b"bad proof line\n"), old, -1
        if any(len(h) != 32 for h in proof):
            return Answer(400, body=b"proof hash is not 32 bytes\n"), old, -1
        parsed = self._open_checkpoint(note)
        if isinstance(parsed, Answer):
            return parsed, old, -1
        text, origin, size, root = parsed
        if old > size:
            return Answer(400, body=b"old size is larger than the checkpoint size\n"), old, size
        with self._lock:  # check-then-update must be atomic (tlog-witness: the rollback race)
            latest_size, latest_root = self.latest.get(origin, (0, b""))
            if old != latest_size:
                return Answer(409, "text/x.tlog.size", b"%d\n" % latest_size), old, size
            if old == size:
                if old > 0 and root != latest_root:
                    return Answer(409, "text/x.tlog.size", b"%d\n" % latest_size), old, size
                if proof:
                    return Answer(400, body=b"proof must be empty for equal sizes\n"), old, size
            elif old == 0:
                if proof:
                    return Answer(400, body=b"proof must be empty from size 0\n"), old, size
            elif not rfc9162_verify_consistency(old, size, latest_root, root, proof):
                return Answer(422, body=b"consistency proof does not verify\n"), old, size
            self.latest[origin] = (size, root)
        return Answer(200, body=self._cosign(text).encode()), old, size

    def _open_checkpoint(self, note: bytes) -> tuple[bytes, str, int, bytes] | Answer:
        split = note.rfind(b"\n\n")
        if split < 0:
            return Answer(400, body=b"checkpoint is not a signed note\n")
        text, sigs = note[: split + 1], note[split + 2 :].decode().split("\n")[:-1]
        fields = text.decode().split("\n")
        if len(fields) < 4 or not _DECIMAL.fullmatch(fields[1]):
            return Answer(400, body=b"malformed checkpoint\n")
        origin, size, root = fields[0], int(fields[1]), _b64(fields[2])
        trusted = self._trusted.get(origin)
        if trusted is None:
            return Answer(404, body=b"unknown log\n")
        for line in sigs:
            assert line.startswith("\u2014 ")
            name, b64 = line[2:].split(" ")
            raw = _b64(b64)
            for key in trusted:
                if (key.name, key.key_id) == (name, int.from_bytes(raw[:4], "big")):
                    try:
                        key.key.verify(raw[4:], text)
                    except InvalidSignature:
                        continue
                    return text, origin, size, root
        return Answer(403, body=b"no signature by a trusted key verifies\n")

    def _cosign(self, text: bytes) -> str:
        # tlog-cosignature v1: Ed25519 over "cosignature/v1\ntime <ts>\n" || checkpoint text.
        timestamp = int(time.time())
        message = b"cosignature/v1\ntime %d\n" % timestamp + (text + b"forged" if self.forge_cosignatures else text)
        sig = self.key.sign(message)
        raw = self.key_id.to_bytes(4, "big") + struct.pack(">Q", timestamp) + sig
        return f"\u2014 {self.name} {base64.b64encode(raw).decode()}\n"
