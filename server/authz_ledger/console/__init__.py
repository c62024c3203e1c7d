"""The audit console: auditors find, read and verify decisions in a browser (``authz-ledger console``).

Pipeline: ``index`` (the console's own LMDB index, derived from the ledger) → ``search`` (a query newest first,
through posting lists) → ``pages`` / ``api`` (Starlette) → ``static/verify.js`` (the browser checks the entry
bytes, the inclusion proof and the signed checkpoint with the auditor's key). Read-only: nothing here writes the
ledger.
"""
