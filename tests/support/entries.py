"""Small real ledger entries for tests that drive the writer directly.

The ledger indexes every entry by the decision id inside it, and `verify` checks that index against the
entries, so even a test's filler entry must be a real LedgerEntry carrying the id it is recorded under.
"""

from __future__ import annotations

from authz_ledger.ledger.queue import Pending
from authz_ledger.record.entry import OUTCOME_ALLOW, DecisionRecord
from authz_ledger.record.ids import new_decision_id


def entry(label: bytes | str = b"") -> tuple[bytes, bytes]:
    """(entry body, decision id bytes): an allow decision whose path carries ``label``."""
    decision_id = new_decision_id()
    text = label.decode("latin-1") if isinstance(label, bytes) else label
    body = DecisionRecord(
        time_unix_nano=1_700_000_000_000_000_000,
        decision_id=str(decision_id),
        path=f"/{text}",
        outcome=OUTCOME_ALLOW,
        allowed=True,
        http_status=200,
    ).encode()
    return body, decision_id.bytes


def pending(label: bytes | str = b"", *, wait: bool = False) -> Pending:
    body, decision_id = entry(label)
    return Pending(body, decision_id, wait)
