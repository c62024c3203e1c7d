"""Reading what the ledger holds, without ever writing it: entries and proofs, the audit gRPC API and a client of
it, and the tlog-tiles / JSON Lines exports."""
