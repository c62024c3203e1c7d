"""The ``authz-ledger`` command line. The only module that prints; the one place that catches the error tree.

Machine-readable output (``--json``) is a contract: field names never change meaning.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from authz_ledger import __version__, config, keys
from authz_ledger.cli import check as cli_check
from authz_ledger.cli import console as cli_console
from authz_ledger.cli import evaluate as cli_eval
from authz_ledger.cli import evidence as cli_evidence
from authz_ledger.cli import export as cli_export
from authz_ledger.cli import read as cli_read
from authz_ledger.cli import replay as cli_replay
from authz_ledger.cli import verify_tiles as cli_verify_tiles
from authz_ledger.cli.common import b64, load_verifiers, non_negative
from authz_ledger.errors import (
    AuthzLedgerError,
    ConfigError,
    LedgerCorruptError,
    LedgerError,
    LedgerFileError,
    RollbackError,
)
from authz_ledger.ledger.opening import LedgerPaths
from authz_ledger.ledger.store import Store
from authz_ledger.ledger.trust import Trust, verify_ledger
from authz_ledger.record import entry

DESCRIPTION = """\
authz-ledger: an Envoy / Istio ext_authz (v3 gRPC) service, compatible with OPA's Envoy plugin, that records
every decision in an append-only ledger with an RFC 6962 Merkle tree and Ed25519-signed C2SP checkpoints.

  authz-ledger serve                      start on OPA's embedded Go engine with the bundled example policy
  authz-ledger serve --policy ./policy    ... with your own .rego / data files (or a bundle .tar.gz)
  authz-ledger eval --policy ./policy --input in.json   the decision serve would make for one input
  authz-ledger verify --data-dir DIR --vkey VKEY   prove offline that the ledger is complete and unaltered
"""


# --- serve -----------------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    from authz_ledger import server

    overrides: dict[str, Any] = {
        "server.addr": args.addr,
        "policy.source": args.policy,
        "ledger.data_dir": args.data_dir,
    }
    if args.key:
        overrides["ledger.signing_keys"] = args.key
    if args.verifier_key:
        overrides["ledger.verifier_keys"] = args.verifier_key
    cfg = config.load(args.config, args.set, overrides=overrides)
    return server.serve(cfg, out)


# --- keys ------------------------------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace, out: TextIO) -> int:
    signer = keys.write_signing_key(Path(args.out), args.origin)
    print(signer.verifier_key(), file=out)
    return 0


def cmd_vkey(args: argparse.Namespace, out: TextIO) -> int:
    if bool(args.key) == bool(args.data_dir):
        raise ConfigError("give exactly one of --key FILE or --data-dir DIR")
    path = Path(args.key) if args.key else LedgerPaths(Path(args.data_dir)).signing_key
    print(keys.load_signing_key(path).verifier_key(), file=out)
    return 0


# --- reading a ledger ------------------------------------------------------------------------------------


def _open_store(data_dir: str) -> Store:
    return Store(LedgerPaths(Path(data_dir)).store, readonly=True)


class _ProgressBar:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, done: int, total: int) -> None:
        width = 40
        frac = done / total if total else 1.0
        filled = int(frac * width)
        self.stream.write(f"\rverifying [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        self.stream.flush()

    def finish(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def cmd_verify(args: argparse.Namespace, out: TextIO) -> int:
    verifiers = load_verifiers(args.vkey)
    progress = _ProgressBar(sys.stderr) if sys.stderr.isatty() and not args.json else None
    store: Store | None = None
    try:
        store = _open_store(args.data_dir)
        trust = Trust(
            verifiers,
            checkpoint_file=LedgerPaths(Path(args.data_dir)).checkpoint,
            unsafe_allow_unsigned=args.allow_unsigned,
        )
        report = verify_ledger(store, trust, progress=progress)
    except (LedgerCorruptError, RollbackError, LedgerFileError) as e:
        if progress:
            progress.finish()
        first, last = (e.seq, e.last_seq) if isinstance(e, LedgerCorruptError) else (None, None)
        if args.json:
            doc: dict[str, Any] = {
                "ok": False, "error": str(e), "code": e.code, "first_bad_seq": first, "last_bad_seq": last,
            }  # fmt: skip
            if isinstance(e, LedgerFileError):
                doc["file"] = e.path
            print(json.dumps(doc), file=out)
        else:
            print(f"FAIL: {args.data_dir}: {e.diagnostics()}", file=out)
        return exit_code(e)
    finally:
        if store is not None:
            store.close()
    if progress:
        progress.finish()
    if args.json:
        doc = {
            "ok": True,
            "size": report.size,
            "root": b64(report.root),
            "entries": report.entries,
            "batches": report.batches,
            "checkpoints": report.checkpoints,
            "latest_checkpoint": report.latest_checkpoint,
            "unsigned_tail": report.size - (report.latest_checkpoint or 0),
            "first_bad_seq": None,
            "error": None,
        }
        print(json.dumps(doc), file=out)
    else:
        print(
            f"OK: {args.data_dir}: {report.size} entries, {report.batches} batches, "
            f"{report.checkpoints} signed checkpoints verified; root {b64(report.root)}"
            + (
                f"; {report.size - (report.latest_checkpoint or 0)} entries after the latest checkpoint"
                if report.size != (report.latest_checkpoint or 0)
                else ""
            ),
            file=out,
        )
    return 0


def cmd_checkpoint(args: argparse.Namespace, out: TextIO) -> int:
    store = _open_store(args.data_dir)
    try:
        latest = store.checkpoint(args.size)
    finally:
        store.close()
    if latest is None:
        raise LedgerError("no checkpoint published yet" if args.size is None else f"no checkpoint at {args.size}")
    out.flush()
    sys.stdout.buffer.write(latest[1]) if out is sys.stdout else out.write(latest[1].decode())
    return 0


def cmd_log(args: argparse.Namespace, out: TextIO) -> int:
    store = _open_store(args.data_dir)
    try:
        for seq, data in itertools.islice(store.iter_entries(args.from_), args.limit):
            msg = entry.decode(data, seq)
            if args.json:
                doc = {"index": seq, "decision_id": msg.decision_id, "entry_b64": b64(data)}
                doc.update(entry.to_json_fields(msg))
                print(json.dumps(doc, ensure_ascii=False), file=out)
            else:
                fields = entry.to_json_fields(msg)
                print(
                    f"{seq:>8} {fields['decision_id']} {fields['outcome']:<5} {fields['http_status'] or '':>3} "
                    f"{fields['method']} {fields['host']}{fields['path']}"
                    + (f"  error={fields['error']}" if fields["error"] else ""),
                    file=out,
                )
    finally:
        store.close()
    return 0


def cmd_redaction(args: argparse.Namespace, out: TextIO) -> int:
    """The redaction ``serve`` would apply with the same configuration sources."""
    from authz_ledger.ledger.opening import redaction_rules

    cfg = config.load(args.config, args.set)
    rules = redaction_rules(cfg.ledger.redaction, announce=False).describe()
    if args.json:
        print(json.dumps(rules), file=out)
        return 0
    for key, value in rules.items():
        shown = ", ".join(value) if isinstance(value, list) else value
        print(f"{key:20s} {shown}", file=out)
    return 0


def cmd_health(args: argparse.Namespace, out: TextIO) -> int:
    """gRPC health check of a running service: for probes that cannot speak gRPC themselves (exec probes)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from authz_ledger.rpc.serving import grpc_address

    address = grpc_address(args.addr)
    if address.startswith("[::]"):
        address = "127.0.0.1" + address[len("[::]") :]
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            status = stub.Check(health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout).status
        except grpc.RpcError as e:
            print(f"{args.addr}: {e.code().name}: {e.details()}", file=out)
            return 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    print(f"{args.addr} {args.service or '(server)'}: {name}", file=out)
    return 0 if status == health_pb2.HealthCheckResponse.SERVING else 1


# --- parser ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="authz-ledger", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--version", action="version", version=f"authz-ledger {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser(
        "serve",
        help="run the ext_authz gRPC service",
        description="Run the ext_authz gRPC service. Precedence: defaults < --config < AUTHZ_LEDGER_SECTION__KEY "
        "environment variables < --set < --addr/--policy/--data-dir/--key.",
    )
    s.add_argument(
        "--addr",
        help="listen address: host:port, :port (all interfaces) or unix:///path (default 127.0.0.1:9191)",
    )
    s.add_argument(
        "--policy",
        metavar="PATH",
        help="a directory of .rego and data files, or a bundle .tar.gz (default: the bundled example policy)",
    )
    s.add_argument("--data-dir", metavar="DIR", help=f"ledger directory (default {config.default_data_dir()})")
    s.add_argument("--config", metavar="FILE", help="YAML configuration file")
    s.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one configuration key, e.g. --set policy.engine=opa (repeatable)",
    )
    s.add_argument(
        "--key",
        metavar="FILE",
        action="append",
        help="signing key file (repeatable: every key signs each checkpoint; the first names the log -- its origin -- "
        "unless ledger.origin is set)",
    )
    s.add_argument(
        "--verifier-key",
        metavar="VKEY",
        action="append",
        help="verifier key (or a file of them) of a retired signing key: the older checkpoints it signed still "
        "verify at start (repeatable; ledger.verifier_keys)",
    )
    s.set_defaults(func=cmd_serve)

    k = sub.add_parser("keygen", help="create an Ed25519 signing key; prints its verifier key")
    k.add_argument("--origin", required=True, help="log origin, also the key name (e.g. authz-ledger.example/prod-1)")
    k.add_argument("--out", required=True, metavar="FILE", help="where to write the private key (mode 0600)")
    k.set_defaults(func=cmd_keygen)

    v = sub.add_parser("vkey", help="print the verifier key (name+id+base64) of a signing key")
    v.add_argument("--key", metavar="FILE")
    v.add_argument("--data-dir", metavar="DIR", help="use the key created on first start in DIR")
    v.set_defaults(func=cmd_vkey)

    f = sub.add_parser("verify", help="verify a ledger offline: leaves, tree, chain, every signed checkpoint")
    f.add_argument("--data-dir", required=True, metavar="DIR")
    f.add_argument(
        "--vkey",
        required=True,
        action="append",
        metavar="VKEY",
        help="trusted verifier key, or a file of them (repeatable, for rotated keys)",
    )
    f.add_argument("--json", action="store_true", help="one JSON object: ok, size, root, first_bad_seq, error")
    f.add_argument(
        "--allow-unsigned", action="store_true", help="accept a non-empty ledger that has no signed checkpoint yet"
    )
    f.set_defaults(func=cmd_verify)

    c = sub.add_parser("checkpoint", help="print the latest signed checkpoint exactly as stored")
    c.add_argument("--data-dir", required=True, metavar="DIR")
    c.add_argument("--size", type=non_negative, help="the checkpoint at this tree size instead of the latest")
    c.set_defaults(func=cmd_checkpoint)

    lg = sub.add_parser("log", help="print ledger entries")
    lg.add_argument("--data-dir", required=True, metavar="DIR")
    lg.add_argument("--from", dest="from_", type=non_negative, default=0, metavar="N", help="first sequence number")
    lg.add_argument("--limit", type=non_negative, metavar="K", help="at most K entries")
    lg.add_argument("--json", action="store_true", help="one JSON object per line, with entry_b64")
    lg.set_defaults(func=cmd_log)

    rd = sub.add_parser(
        "redaction",
        help="print the redaction serve applies before storing (lists, name pattern, value detection, body)",
    )
    rd.add_argument("--config", metavar="FILE")
    rd.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    rd.add_argument("--json", action="store_true", help="one JSON object")
    rd.set_defaults(func=cmd_redaction)

    h = sub.add_parser("health", help="ask a running service's gRPC health service; exit 0 only if SERVING")
    h.add_argument("--addr", default="127.0.0.1:9191", help="address of the service (default 127.0.0.1:9191)")
    h.add_argument("--service", default="envoy.service.auth.v3.Authorization", help="service name ('' = server)")
    h.add_argument("--timeout", type=float, default=2.0, metavar="SECONDS")
    h.set_defaults(func=cmd_health)

    cli_check.register(sub)
    cli_console.register(sub)
    cli_eval.register(sub)
    cli_evidence.register(sub)
    cli_export.register(sub)
    cli_read.register(sub)
    cli_replay.register(sub)
    cli_verify_tiles.register(sub)
    return p


EXIT_FAILED = 1  # the command ran and the answer is no (verify: the ledger does not verify)
EXIT_USAGE = 2  # bad configuration or arguments
EXIT_DAMAGED_FILE = 3  # a ledger file is truncated or overwritten: restore it from a backup


def exit_code(error: AuthzLedgerError) -> int:
    """The documented exit codes (README "Exit codes"): scripts tell a damaged disk from a tampered history."""
    if isinstance(error, LedgerFileError):
        return EXIT_DAMAGED_FILE
    if isinstance(error, ConfigError):
        return EXIT_USAGE
    return EXIT_FAILED


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    stream = out or sys.stdout
    try:
        code: int = args.func(args, stream)
    except AuthzLedgerError as e:
        print(_printable(f"authz-ledger {args.command}: {e.diagnostics()}"), file=sys.stderr)
        return exit_code(e)
    except BrokenPipeError:
        return 0
    except (OSError, UnicodeError) as e:
        # What an argument named cannot be used (a missing file, a directory where a file belongs, a name or
        # content that is not UTF-8): the user's to fix, so a usage error with the reason, not a traceback.
        print(_printable(f"authz-ledger {args.command}: {_unusable(e)}"), file=sys.stderr)
        return 2
    return code


def _printable(text: str) -> str:
    """A message that any stream can write: a name that is not UTF-8 (surrogate escapes) shown as \\udcxx."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _unusable(error: OSError | UnicodeError) -> str:
    if isinstance(error, OSError):
        where = f": {os.fsdecode(error.filename)!a}" if error.filename is not None else ""
        return f"{error.strerror or error}{where}"
    return f"not UTF-8 text ({error})"


if __name__ == "__main__":
    sys.exit(main())
