"""authz-ledger: an Envoy ext_authz service whose every decision lands in a signed, verifiable ledger.

The package reads as the pipeline it implements::

    check            gRPC Authorization/Check handler (one Decision per Check, whatever the outcome)
    input_document   CheckRequest -> opa-envoy-plugin input document
    policy/          policy engines behind one interface (embedded Rego, real OPA)
    result           policy result -> CheckResponse (opa-envoy-plugin result contract)
    entry, redact    the versioned ledger entry and the redaction applied before anything is written
    writer           the single writer thread: group commit, hash chain, tree, checkpoints
    store            LMDB layout (entries, stored tree hashes, batch chain, checkpoints)
    tree             RFC 6962 Merkle tree, proofs (pure)
    note, checkpoint C2SP signed-note and tlog-checkpoint (pure)
    verify           offline verification of a whole ledger
"""

from __future__ import annotations

__version__ = "0.1.0"
