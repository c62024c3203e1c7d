"""authz-ledger exactly as ``authz-ledger serve`` runs it, but with a zero-cost stub policy engine.

Usage: ``python bench/stub_server.py serve --addr ... --data-dir ... [--set key=value]...`` (the CLI's own
arguments). Everything else is the product's code path: config, gRPC server, health, reflection, Check
handler, input document, redaction, result mapping, ledger. Only ``server.build_engine`` is replaced, so
the server process's CPU per Check is authz-ledger's own cost with policy evaluation (and the engine's
client side) excluded entirely. Needs ``server`` on PYTHONPATH.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _workload import StubEngine

from authz_ledger import cli, server
from authz_ledger.config import Config
from authz_ledger.policy import PolicyEngine


def _stub_engine(cfg: Config) -> PolicyEngine:
    return StubEngine()


if __name__ == "__main__":
    server.build_engine = _stub_engine
    sys.exit(cli.main(sys.argv[1:]))
