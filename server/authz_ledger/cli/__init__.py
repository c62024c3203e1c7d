"""The ``authz-ledger`` command: one module per command group (:mod:`.main` builds the parser and dispatches)."""
