"""``python -m authz_ledger.cli``: the same program as the ``authz-ledger`` command."""

from authz_ledger.cli.main import main

raise SystemExit(main())
