"""``authz-ledger console``: the audit console, a read-only web application over one ledger, or several.

Find decisions (a query language, filters, a live tail), read one (decision, redacted input, policy result), and
verify it in the browser: the page checks the entry bytes, an inclusion proof and the latest signed checkpoint
with the verifier key, so the auditor trusts the key, not this server. Safe while ``serve`` runs (read-only LMDB
transactions); the console keeps its own index (``--index-dir``), built on first start and followed after.

A fleet: ``--data-dir`` once per replica. Each directory is a shard with its own index (under ``--index-dir``
when given) and indexer; the search page merges them by time, and an entry is verified with the key named
like its shard's origin (console/fleet.py).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, TextIO

from authz_ledger.cli.common import load_verifiers
from authz_ledger.config import ConsoleConfig
from authz_ledger.console.context import open_context
from authz_ledger.console.fleet import open_fleet
from authz_ledger.console.serving import run_console
from authz_ledger.ledger.opening import LedgerPaths


def register(sub: Any) -> None:
    c = sub.add_parser(
        "console",
        help="serve the read-only audit console (find, read and verify decisions in a browser)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = ConsoleConfig()
    c.add_argument(
        "--data-dir",
        required=True,
        type=Path,
        action="append",
        help="the data directory serve writes; repeatable: several replicas' directories, one shard each, shown as "
        "one list merged by time (each shard needs a --vkey named like its origin)",
    )
    c.add_argument("--vkey", action="append", required=True, help="verifier key (or a file of them); repeatable")
    c.add_argument("--addr", default=defaults.addr, help=f"listen address (default {defaults.addr})")
    c.add_argument("--index-dir", default="", help="where the console keeps its index (default: the user's cache)")
    c.add_argument("--tls-cert", default="", metavar="PEM")
    c.add_argument("--tls-key", default="", metavar="PEM")
    c.add_argument("--client-ca", default="", metavar="PEM", help="require browser certificates signed by this CA")
    c.add_argument("--token-file", default="", metavar="FILE", help="require this bearer token on every request")
    c.add_argument(
        "--user-header",
        action="append",
        default=None,
        metavar="NAME",
        help=f"header naming the user when there is no mTLS principal (default: {', '.join(defaults.user_headers)})",
    )
    c.add_argument("--index-header", action="append", default=[], metavar="NAME", help="index this header's values too")
    c.add_argument(
        "--candidate-policy",
        action="append",
        default=[],
        metavar="PATH",
        help="a policy directory or bundle .tar.gz the replay page may evaluate against recorded decisions "
        "(repeatable; named by its file or directory name)",
    )
    c.set_defaults(func=cmd_console)


def cmd_console(args: argparse.Namespace, out: TextIO) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = ConsoleConfig(
        enabled=True,
        addr=args.addr,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        client_ca=args.client_ca,
        token_file=args.token_file,
        index_dir=args.index_dir,
        user_headers=args.user_header or ConsoleConfig().user_headers,
        index_headers=args.index_header,
        candidate_policies=args.candidate_policy,
    )
    verifiers = load_verifiers(args.vkey)
    if len(args.data_dir) == 1:
        ctx = open_context(LedgerPaths(args.data_dir[0]).store, verifiers, cfg)
        fleet = None
    else:
        fleet = open_fleet(args.data_dir, verifiers, cfg)
        ctx = fleet.shards[0].ctx
        print(f"authz-ledger console: shards {', '.join(fleet.origins)}", file=out, flush=True)
    print(f"authz-ledger console: {'https' if cfg.tls_cert else 'http'}://{cfg.addr}/", file=out, flush=True)
    run_console(ctx, cfg, fleet)
    return 0
