"""authz-ledger: an Envoy ext_authz service whose every decision lands in a signed, verifiable ledger.

The package reads as the pipeline it implements (ARCHITECTURE.md; imports point only down, see pyproject.toml)::

    cli/        the authz-ledger command
    server      composition root: engine, ledger, witnesses, listeners, signals
    check/      ext_authz Check: CheckRequest -> input document -> policy -> CheckResponse, one entry per Check
    readside/   reader, proofs and receipts, the audit gRPC API, tlog-tiles and JSON Lines exports
    witness/    C2SP tlog-witness client: cosignatures on every new checkpoint
    metrics     Prometheus
    policy/     policy engines behind one interface (OPA's Go engine embedded, or a real OPA server)
    ledger/     LMDB store, the single writer thread, offline verification, opening a data directory
    config, rpc configuration schema; gRPC plumbing and the one error -> status map
    keys        signing and redaction keys on disk
    record/     what a decision becomes: the entry, its id, redaction, JSON as Go reads and writes it
    tlog/       RFC 6962 tree and proofs, C2SP signed note, checkpoint, cosignature, receipt (pure)
    errors      the one error tree
"""

from __future__ import annotations

__version__ = "0.1.0"
