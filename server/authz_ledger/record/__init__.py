"""What one decision becomes in the ledger: the versioned entry, its decision id, the redaction applied before
anything is written, and the Go-compatible JSON reading and writing that keeps a body's bytes as OPA sees them."""
