"""The C2SP tlog-witness ``add-checkpoint`` exchange on the wire (https://c2sp.org/tlog-witness).

What a request body holds and how much of it the spec allows, and what each answer means. Kept apart from the
publisher's threads and HTTP client so the format can be read against the spec in one place.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from authz_ledger.errors import WitnessError

SIZE_CONTENT_TYPE = "text/x.tlog.size"
"""Content-Type of a 409 answer, whose body is the witness's latest cosigned size (tlog-witness)."""

MAX_RESPONSE_BYTES = 64 * 1024
MAX_PROOF_LINES = 63  # tlog-witness: "The client MUST NOT send more than 63 consistency proof lines."

STATUS_MEANING = {
    400: "rejected the request as malformed (old size larger than the checkpoint's?)",
    403: "does not trust any key that signed the checkpoint: add the log's verifier key(s) to the witness",
    404: "does not know this log's origin: configure the log on the witness",
    422: "rejected the consistency proof: it holds a different tree at the old size (fork?)",
}
"""What a witness means by each refusal, for the operator reading the log line."""


@dataclass(frozen=True)
class Answer:
    """A witness's answer to one ``add-checkpoint`` request, read whole (at most MAX_RESPONSE_BYTES)."""

    status: int
    body: bytes
    content_type: str


def add_checkpoint_body(old: int, size: int, proof: Sequence[bytes], signed: bytes) -> bytes:
    """``old <size>\\n``, one base64 proof hash per line, an empty line, the signed checkpoint.

    WitnessError when the proof is longer than the spec lets a client send.
    """
    if len(proof) > MAX_PROOF_LINES:
        raise WitnessError(f"consistency proof {old} -> {size} has {len(proof)} hashes, more than 63")
    lines = [f"old {old}\n", *(base64.b64encode(h).decode("ascii") + "\n" for h in proof), "\n"]
    return "".join(lines).encode("ascii") + signed


def parse_size(answer: Answer) -> int:
    """The 409 body: the witness's latest cosigned size in decimal, then a newline (tlog-witness)."""
    if answer.content_type.split(";")[0].strip().lower() != SIZE_CONTENT_TYPE:
        raise WitnessError(f"409 answer has Content-Type {answer.content_type!r}, want {SIZE_CONTENT_TYPE}")
    text = answer.body.decode("ascii", errors="replace")
    digits = text[:-1]
    if not text.endswith("\n") or not digits.isascii() or not digits.isdigit() or digits != str(int(digits)):
        raise WitnessError(f"409 answer body {text[:40]!r} is not a decimal size and a newline")
    return int(digits)
