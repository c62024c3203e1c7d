"""Generated hostile CheckRequests through the real handler, engine and ledger: no crash, no hang, one entry each.

bench/faults_fuzz.py checks the same on 100,000 inputs from a seeded generator of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
from hypothesis import HealthCheck, given, settings

from authz_ledger.check.arrival import parse_check_request
from authz_ledger.check.handler import CheckOptions, CheckService
from authz_ledger.config import EXAMPLE_POLICY
from authz_ledger.ledger.store import Store
from authz_ledger.policy.embedded import EmbeddedEngine
from authz_ledger.record.redact import RedactionRules, Redactor
from authz_ledger.tlog import note
from tests.conftest import ORIGIN, make_writer
from tests.support.hostile import check_requests


class Context:
    def __init__(self) -> None:
        self.code: Any = None

    def time_remaining(self) -> float:
        return 10.0

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        pass


def run_campaign(tmp: Path, examples: int) -> tuple[int, int]:
    """Returns (inputs tried, ledger entries)."""
    store = Store(tmp / "ledger", map_size=1 << 30)
    writer = make_writer(store, note.generate_signer(ORIGIN))
    writer.start()
    engine = EmbeddedEngine(EXAMPLE_POLICY, workers=1, timeout=5.0)
    service = CheckService(engine, writer, Redactor(RedactionRules(), b"k" * 32), CheckOptions())
    tried = 0

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(raw=check_requests())
    def one(raw: bytes) -> None:
        nonlocal tried
        context = Context()
        response = service.Check(parse_check_request(raw), context)  # type: ignore[arg-type]
        assert response is not None
        assert context.code is not None or response.status.code in (0, 7)
        tried += 1

    try:
        one()
    finally:
        engine.close()
        writer.close()
    size = store.head().size
    store.close()
    return tried, size


def test_generated_hostile_requests_each_get_an_answer_and_exactly_one_entry(tmp_path: Path) -> None:
    tried, entries = run_campaign(tmp_path, examples=1500)
    assert tried >= 1500
    assert entries == tried
